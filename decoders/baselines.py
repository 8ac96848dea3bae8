"""Baselines that people would use instead of an LLM, on the same split, inputs and metrics.

- ``fit_ridge``: ridge regression on lagged activity (a Wiener filter): the tail at t from
  the causally normalised (and optionally screened) activity at t, t-1, ..., t-L+1; the
  penalty is chosen on the validation part.
- ``fit_gru``: a GRU on the same windows, trained by ``decoders.train.fit`` with the
  ``"gru"`` backbone (input map -> GRU -> head), so it shares the training loop and streaming.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decoders.model import CausalNorm, screen_neurons
from decoders.train import _arrays, split_frames


ALPHAS = tuple(10.0 ** np.arange(-2, 7))  # ridge penalties tried, on standardised inputs


def lagged(z: np.ndarray, lags: int) -> np.ndarray:
    """Design matrix (T, lags*k): row t holds z[t], z[t-1], ..., z[t-lags+1] (zeros before 0)."""
    T, k = z.shape
    out = np.zeros((T, lags * k), z.dtype)
    for lag in range(lags):
        out[lag:, lag * k:(lag + 1) * k] = z[:T - lag]
    return out


@dataclass
class RidgeDecoder:
    """A fitted lagged ridge decoder; ``predict(traces)`` is causal like ``Decoder.predict``."""

    screen: np.ndarray  # (k,) neuron ids
    lags: int
    norm: str
    norm_tau: float
    x_mean: np.ndarray  # (k,) training statistics for norm="fixed"
    x_std: np.ndarray
    coef: np.ndarray  # (lags*k, S)
    intercept: np.ndarray  # (S,)
    alpha: float
    horizon: int = 0

    def normalise(self, traces: np.ndarray) -> np.ndarray:
        norm = CausalNorm(self.norm, self.norm_tau, self.x_mean, self.x_std)
        return norm.run(np.asarray(traces, np.float64)[:, self.screen])

    def predict(self, traces: np.ndarray, start: int = 0) -> np.ndarray:
        """(T, N) activity -> (T, S) tail estimate, each row from frames up to that row;
        rows before ``start`` are NaN (not computed), as ``Decoder.predict``."""
        X = lagged(self.normalise(traces), self.lags)[start:]
        out = np.full((len(traces), len(self.intercept)), np.nan, np.float32)
        out[start:] = X @ self.coef + self.intercept
        return out


def fit_ridge(sessions, lags: int = 8, screen: int | None = None, norm: str = "running",
              norm_tau: float = 300.0, horizon: int = 0,
              alphas=ALPHAS, fractions=(0.7, 0.1, 0.2)) -> RidgeDecoder:
    """Fit lagged ridge on the training parts, pick the penalty on the validation parts."""
    if lags < 1:
        raise ValueError(f"lags={lags}: need at least 1 (the current frame)")
    xs, ys = _arrays(sessions)
    splits = [split_frames(len(x), fractions) for x in xs]
    tr_x = np.concatenate([x[sp.train[0]:sp.train[1]] for x, sp in zip(xs, splits)])
    tr_y = np.concatenate([y[sp.train[0]:sp.train[1]] for y, sp in zip(ys, splits)])
    keep = screen_neurons(tr_x, tr_y, screen)
    model = RidgeDecoder(keep, lags, norm, norm_tau, tr_x[:, keep].mean(0),
                         tr_x[:, keep].std(0) + 1e-3, np.zeros(0), np.zeros(0), 0.0, horizon)
    parts = {"train": ([], []), "val": ([], [])}
    for x, y, sp in zip(xs, ys, splits):
        X = lagged(model.normalise(x), lags).astype(np.float64)
        for name in parts:
            a, b = getattr(sp, name)
            b = b - horizon  # labels stay inside their own part
            parts[name][0].append(X[a:b])
            parts[name][1].append(y[a + horizon:b + horizon])
    model.alpha, model.coef, model.intercept = ridge_solve(
        *(np.concatenate(v) for v in parts["train"]), *(np.concatenate(v) for v in parts["val"]),
        alphas)
    return model


def ridge_solve(Xt: np.ndarray, Yt: np.ndarray, Xv: np.ndarray, Yv: np.ndarray,
                alphas=ALPHAS) -> tuple[float, np.ndarray, np.ndarray]:
    """Ridge of Yt (n, S) on Xt (n, p), penalty chosen by the validation MSE on (Xv, Yv).

    Returns (alpha, coef (p, S), intercept (S,)).
    """
    mx, my = Xt.mean(0), Yt.mean(0)
    # One SVD serves every penalty: w(a) = V diag(s / (s^2 + a)) U^T y.
    U, s, Vt = np.linalg.svd(Xt - mx, full_matrices=False)
    uy = U.T @ (Yt - my)
    best = None
    for a in alphas:
        coef = Vt.T @ ((s / (s * s + a))[:, None] * uy)
        err = float((((Xv - mx) @ coef + my - Yv) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, a, coef)
    _, alpha, coef = best
    return float(alpha), coef, my - mx @ coef


def fit_gru(sessions, hidden: int = 64, **kw):
    """A GRU decoder (``decoders.train.fit`` with the ``gru-<hidden>`` backbone)."""
    from decoders.train import fit

    kw.setdefault("lr", 3e-3)
    kw.setdefault("lags", 0)  # the plain recurrent baseline, without the linear path,
    kw.setdefault("embed_hidden", 0)  # the MLP frame embedding
    kw.setdefault("onsets", False)  # frame changes: a recurrent state has them already
    kw.setdefault("noise", 0.0)  # and input noise (both cost the GRU on simulated fish)
    kw.setdefault("gain", 0.0)  # and gain augmentation (the decoder's; `decoder_routes` tries it)
    kw.setdefault("members", 1)  # one GRU and head (`decoder_eval` also scores seed means)
    return fit(sessions, model=f"gru-{hidden}", pretrained=False, finetune="full", **kw)
