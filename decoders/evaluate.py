"""Score decoders on held-out frames: RMSE, Pearson r, R², chance row, bout F1, seeds.

Every figure is causal (each prediction from frames up to its own) and every table carries
the chance row: the training mean of each tail variable predicted at every frame, whose R² is
~0 by construction on stationary data. R² > 0 means better than that.
"""
from __future__ import annotations

import numpy as np

BOUT_Z = 2.0  # bout threshold: training vigour median + BOUT_Z robust sd


def vigour(tail: np.ndarray) -> np.ndarray:
    """Per-frame movement strength (T,): mean |segment angle| (rad)."""
    return np.abs(np.asarray(tail, np.float64)).mean(-1)


def bout_threshold(train_tail: np.ndarray) -> float:
    """Vigour above which a frame counts as moving, from training frames.

    median + max(2 robust sd, 20% of the way to the 95th percentile): the second term keeps
    the threshold above noise when the fish moves in over half the frames (median = MAD = 0).
    """
    v = vigour(train_tail)
    med = np.median(v)
    spread = max(BOUT_Z * 1.4826 * np.median(np.abs(v - med)), 0.2 * (np.percentile(v, 95) - med))
    return float(med + spread + 1e-6)


def bout_f1(pred: np.ndarray, true: np.ndarray, threshold: float) -> float:
    """Frame-wise F1 of 'moving' (vigour > threshold), predicted vs true; nan if no true bout."""
    p, t = vigour(pred) > threshold, vigour(true) > threshold
    tp = float((p & t).sum())
    if t.sum() == 0:
        return float("nan")
    return 2 * tp / max(float(p.sum() + t.sum()), 1.0)


def scores(pred: np.ndarray, true: np.ndarray) -> dict:
    """Per-variable and mean RMSE, Pearson r, R² of pred vs true, both (T, S)."""
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape}: need the same (frames, vars)")
    err = pred - true
    rmse = np.sqrt((err ** 2).mean(0))
    ss_res = (err ** 2).sum(0)
    ss_tot = ((true - true.mean(0)) ** 2).sum(0) + 1e-12
    pc, tc = pred - pred.mean(0), true - true.mean(0)
    den = np.sqrt((pc ** 2).sum(0) * (tc ** 2).sum(0))
    r = np.where(den > 0, (pc * tc).sum(0) / np.where(den > 0, den, 1), 0.0)
    r2 = 1 - ss_res / ss_tot
    return {"rmse": rmse.tolist(), "r": r.tolist(), "r2": r2.tolist(),
            "rmse_mean": float(rmse.mean()), "r_mean": float(r.mean()), "r2_mean": float(r2.mean())}


def evaluate(pred: np.ndarray, true: np.ndarray, threshold: float) -> dict:
    """``scores`` plus bout F1 for one model on one test part."""
    out = scores(pred, true)
    out["bout_f1"] = bout_f1(pred, true, threshold)
    return out


def chance(train_tail: np.ndarray, n_frames: int) -> np.ndarray:
    """The chance predictor: the training mean of every variable at every test frame."""
    return np.repeat(np.asarray(train_tail, np.float64).mean(0, keepdims=True), n_frames, 0)


def aggregate(rows: list[dict], keys=("r_mean", "r2_mean", "rmse_mean", "bout_f1")) -> dict:
    """Mean and sd (ddof=1) of each key across seeds or fish."""
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], float)
        sd = float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0
        out[k] = {"mean": float(np.nanmean(v)), "sd": sd,
                  "n": int(len(v))}
    return out


def paired(a: list[float], b: list[float]) -> dict:
    """Paired comparison of two models over the same seeds/fish: mean difference a - b,
    paired t-test and Wilcoxon signed-rank p-values (nan when n < 2 or all equal)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired: {a.shape} vs {b.shape}; need one value per seed for both")
    d = a - b
    out = {"diff_mean": float(d.mean()), "diff_sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
           "n": int(len(d)), "wins": int((d > 0).sum()), "t_p": float("nan"),
           "wilcoxon_p": float("nan")}
    if len(d) >= 2 and np.any(d != d[0]):
        out["t_p"] = float(stats.ttest_rel(a, b).pvalue)
        if np.any(d != 0):
            out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def table(results: dict[str, dict]) -> str:
    """Markdown table of aggregated results: {model: aggregate(...)}."""
    lines = ["| model | Pearson r | R² | RMSE (rad) | bout F1 | n |", "|---|---|---|---|---|---|"]
    for name, agg in results.items():
        cells = [f"{agg[k]['mean']:.3f} ± {agg[k]['sd']:.3f}"
                 for k in ("r_mean", "r2_mean", "rmse_mean", "bout_f1")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {agg['r_mean']['n']} |")
    return "\n".join(lines)


def score_sessions(predict, sessions, fractions=(0.7, 0.1, 0.2), horizon: int = 0,
                   part: str = "test") -> dict:
    """Score ``predict`` on the test part of every session.

    ``predict(traces (T, N), start) -> (T, S)`` is causal and computes rows from ``start`` on
    (``Decoder.predict``, ``RidgeDecoder.predict``): the session is fed from its first frame
    (so normalisation state and context are what a live run would have) but only the test
    frames are decoded, which is all that is scored. Frames t in the test part are compared
    with the tail at t + horizon. Returns {"model": evaluate(...), "chance": evaluate(...)}
    over all sessions' test frames pooled. ``part="val"`` scores the validation part instead.
    """
    from decoders.train import split_frames

    preds, trues, chances, train_tails = [], [], [], []
    for s in sessions:
        sp = split_frames(s.n_frames, fractions)
        tail = np.asarray(s.tail, np.float64).reshape(s.n_frames, -1)
        a, b = getattr(sp, part)[0], getattr(sp, part)[1] - horizon
        pred = np.asarray(predict(s.traces, a))
        preds.append(pred[a:b])
        trues.append(tail[a + horizon:b + horizon])
        train_tails.append(tail[sp.train[0]:sp.train[1]])
        chances.append(chance(train_tails[-1], b - a))
    th = bout_threshold(np.concatenate(train_tails))
    true = np.concatenate(trues)
    return {"model": evaluate(np.concatenate(preds), true, th),
            "chance": evaluate(np.concatenate(chances), true, th)}


class RunningPearson:
    """Pearson r per variable from running sums (prediction vs label pairs)."""

    def __init__(self, n_vars: int):
        self.n = 0
        self.s = np.zeros((5, n_vars))  # sum p, sum y, sum p^2, sum y^2, sum p*y

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        p, y = np.asarray(pred, np.float64), np.asarray(true, np.float64)
        if p.shape != (self.s.shape[1],) or y.shape != p.shape:
            raise ValueError(f"RunningPearson.add: pred {p.shape}, true {y.shape}; "
                             f"expected ({self.s.shape[1]},) each")
        self.n += 1
        self.s += np.stack([p, y, p * p, y * y, p * y])

    def r(self) -> np.ndarray:
        """(S,) Pearson r so far (nan until 3 pairs or with a constant series)."""
        if self.n < 3:
            return np.full(self.s.shape[1], np.nan)
        n, (sp, sy, spp, syy, spy) = self.n, self.s
        cov = spy - sp * sy / n
        den = np.sqrt(np.maximum(spp - sp * sp / n, 0) * np.maximum(syy - sy * sy / n, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, cov / den, np.nan)
