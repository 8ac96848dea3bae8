"""The decoder table on simulated fish of varied design, and the pretraining question.

Fish (``fish_design``): ``sims.simulate`` with the design drawn per fish from wide ranges that
no model was tuned on: neurons 1,000-3,000; 10-12 min at 2 or 3 Hz; fraction of
behaviour-carrying hindbrain neurons 4-20%; indicator GCaMP6s or 6f (the lag and smoothing
between spikes and fluorescence); gain-drift sd 0.05-0.3 with time constant 60-300 s;
photon budget 100-800 /s (shot noise); spike amplitude 0.08-0.2 dF/F; bout rate 0.1-0.4 Hz.
Every model is causal and scored on the last 20% of each fish (time-ordered 70/10/20 split).

Rows, per fish and training seed:

- the decoder as ``rig train`` builds it with no options (``DEFAULTS``), its transformer path
  alone (without the lagged-ridge linear path it is mixed with; the linear path alone is the
  screened ridge row) and its random-init twin (same architecture and training, random
  weights); the transformer's share in the mix is recorded per run (``mix``);
- for each other training mode asked (``--modes``: LoRA, full fine-tuning) the pretrained
  decoder and its twin, on the first ``--mode-fish`` fish and ``--mode-seeds`` seeds;
- lagged ridge on the screened neurons and on all neurons, a GRU (hidden 64), chance;
- the GRU's seed ensemble: the mean of its predictions over the ``--seeds`` training seeds,
  the like of the decoder's ``members`` (its K embeddings and heads) for the recurrent model;
- the GRU given the decoder's gain augmentation (``gain``), which, unlike the decoder's other
  parts, does not cost a GRU.

Statistics: per fish the mean over seeds; then mean over fish with a 95% t interval. Paired
pretrained - random differences per (fish, seed), their mean with a 95% t interval over fish
(seed-averaged), wins, and a Wilcoxon signed-rank p over all pairs.

    python -m benchmarks.decoder_eval [--fish 5] [--seeds 3] [--modes lora full] [--jobs 2]
    python -m benchmarks.decoder_eval --quick          # tiny backbone, smoke test
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks.common import write_json

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("decoder_eval")


def fish_design(i: int):
    """(FishConfig, n_frames) of simulated fish ``i``: its design drawn from the ranges in the
    module docstring by a generator seeded with ``i`` (the simulator itself is untouched)."""
    from sims import FishConfig

    rng = np.random.default_rng(1000 + i)
    rate = float(rng.choice([2.0, 3.0]))
    config = FishConfig(
        n_neurons=int(rng.choice([1000, 2000, 3000])), volume_rate_hz=rate,
        motor_fraction=float(rng.uniform(0.04, 0.2)),
        indicator=str(rng.choice(["GCaMP6s", "GCaMP6f"])),
        drift_sd=float(rng.uniform(0.05, 0.3)), drift_tau_s=float(rng.uniform(60, 300)),
        photons=float(rng.uniform(100, 800)), spike_amp_dff=float(rng.uniform(0.08, 0.2)),
        spont_bout_hz=float(rng.uniform(0.1, 0.4)), seed=i)
    return config, int(rng.uniform(10, 12) * 60 * rate)


def _score(predict, s) -> dict:
    from decoders.evaluate import score_sessions

    return score_sessions(predict, [s])


def run_fish(task: dict) -> dict:
    """Every row for one fish: {row name: {seed: scores}}; runs in a worker process."""
    import torch

    from decoders.baselines import fit_gru, fit_ridge
    from decoders.train import fit, split_frames
    from sims import simulate

    torch.set_num_threads(1)
    _log_setup()  # a spawned worker starts with no logging configured
    i, a = task["fish"], task["args"]
    if a["quick"]:
        from decoders.synthetic import make_session

        s = make_session(n_frames=300, n_neurons=200, seed=i)
        design = {"synthetic": True}
    else:
        config, frames = fish_design(i)
        s = simulate(config, n_frames=frames)
        design = {**config.to_dict(), "n_frames": frames}
    rows: dict[str, dict] = {}

    def add(name, seed, scores, **extra):
        rows.setdefault(name, {})[seed] = {**scores["model"], **extra}
        rows.setdefault("chance (train mean)", {})[seed] = scores["chance"]

    screen = a["decoder"]["screen"]
    gru_preds = []
    for seed in range(a["seeds"]):
        for mode in ["frozen", *a["modes"]]:
            if mode != "frozen" and (i >= a["mode_fish"] or seed >= a["mode_seeds"]):
                continue
            for pretrained in (True, False):
                t0 = time.perf_counter()
                # (--quick: the tiny backbone has no pretrained weights; both rows are random)
                kw = {**a["decoder"], "finetune": mode, "pretrained": pretrained and not a["quick"]}
                if mode != "frozen":  # one member: K of them cost K times the compute
                    kw.update(lr=a["mode_lr"][mode], members=1)
                dec, rec = fit([s], seed=seed, **kw)
                name = f"{mode}, {'pretrained' if pretrained else 'random init'}"
                add(name, seed, _score(dec.predict, s), seconds=time.perf_counter() - t0,
                    epochs=len(rec["epochs"]) - 1, mix=dec.config.mix[0])
                if mode == "frozen" and pretrained and dec.net.linear is not None:
                    add("its transformer path alone", seed,
                        _score(lambda x, st: dec.predict(x, st, path="transformer"), s))
                log.info("fish %d seed %d %-24s r=%.3f (%.0f s)", i, seed, name,
                         rows[name][seed]["r_mean"], time.perf_counter() - t0)
        # the decoder's window, epochs and patience: the same budget
        gru, _ = fit_gru([s], hidden=64, window=a["decoder"]["window"], screen=screen,
                         epochs=a["decoder"]["epochs"], patience=a["decoder"]["patience"],
                         seed=seed)
        gru_preds.append(gru.predict(s.traces, split_frames(s.n_frames).test[0]))
        add("GRU-64", seed, _score(lambda x, st: gru_preds[-1], s))
        gru_gain, _ = fit_gru([s], hidden=64, window=a["decoder"]["window"], screen=screen,
                              epochs=a["decoder"]["epochs"], patience=a["decoder"]["patience"],
                              gain=a["decoder"]["gain"], seed=seed)
        add(f"GRU-64, gain sd {a['decoder']['gain']}", seed, _score(gru_gain.predict, s))
    gru_mean = np.mean(gru_preds, 0)
    for seed in range(a["seeds"]):  # one ensemble per fish: the same row for every seed
        add(f"GRU-64, mean of {a['seeds']} seeds", seed, _score(lambda x, st: gru_mean, s))
    for name, k in ((f"ridge, 4 lags, {screen} screened", screen), ("ridge, 4 lags, all", None)):
        ridge = fit_ridge([s], lags=4, screen=k)
        for seed in range(a["seeds"]):  # deterministic: the same row for every seed
            add(name, seed, _score(ridge.predict, s))
    return {"fish": i, "design": design, "rows": rows}


def _log_setup() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def _t_interval(v: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t interval of v (nan half-width for n < 2)."""
    from scipy import stats

    v = np.asarray(v, float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def summarise(per_fish: list[dict]) -> dict:
    """Per row: mean r over fish (seed-averaged) with a 95% t interval, and the same for R²."""
    names = list(dict.fromkeys(n for f in per_fish for n in f["rows"]))
    out = {}
    for name in names:
        fish = [f["rows"][name] for f in per_fish if name in f["rows"]]
        cell = {}
        for key in ("r_mean", "r2_mean", "bout_f1"):
            per = [np.nanmean([v[key] for v in seeds.values()]) for seeds in fish]
            m, lo, hi = _t_interval(per)
            cell[key] = {"mean": m, "ci95": [lo, hi]}
        mixes = [v["mix"] for seeds in fish for v in seeds.values() if "mix" in v]
        if mixes:  # the transformer's share in the decoder's mix with its linear path
            cell["mix"] = float(np.mean(mixes))
        cell["n_fish"] = len(fish)
        cell["n_runs"] = sum(len(seeds) for seeds in fish)
        out[name] = cell
    return out


def paired(per_fish: list[dict], a: str, b: str) -> dict | None:
    """a - b in r over every (fish, seed) both have: mean with a 95% t interval over fish
    (seed-averaged), wins and a Wilcoxon signed-rank p over all pairs."""
    from scipy import stats

    pairs, fish_means = [], []
    for f in per_fish:
        ra, rb = f["rows"].get(a, {}), f["rows"].get(b, {})
        d = [ra[s]["r_mean"] - rb[s]["r_mean"] for s in ra if s in rb]
        if d:
            pairs += d
            fish_means.append(np.mean(d))
    if not pairs:
        return None
    m, lo, hi = _t_interval(fish_means)
    p = float(stats.wilcoxon(pairs).pvalue) if len(pairs) > 1 and np.any(pairs) else float("nan")
    return {"diff_mean": m, "ci95": [lo, hi], "wins": int(np.sum(np.array(pairs) > 0)),
            "pairs": len(pairs), "fish": len(fish_means), "wilcoxon_p": p}


def main(argv=None) -> int:
    from decoders import DEFAULTS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny backbone, synthetic fish (smoke)")
    p.add_argument("--fish", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3, help="training seeds per fish")
    p.add_argument("--modes", nargs="*", default=["lora", "full"], choices=["lora", "full"])
    p.add_argument("--mode-fish", type=int, default=5, help="fish that the --modes run on")
    p.add_argument("--mode-seeds", type=int, default=1, help="seeds that the --modes run on")
    p.add_argument("--jobs", type=int, default=1, help="fish simulated and fitted in parallel")
    p.add_argument("--out", default=None)
    p.add_argument("--md", default=str(ROOT / "docs" / "decoder_eval.md"))
    args = p.parse_args(argv)
    _log_setup()
    decoder = dict(DEFAULTS)
    if args.quick:
        decoder.update(model="tiny-llama", epochs=2)
        args.fish, args.seeds, args.mode_fish = 2, 2, 1
    task_args = {"quick": args.quick, "seeds": args.seeds, "modes": args.modes,
                 "mode_fish": args.mode_fish, "mode_seeds": args.mode_seeds,
                 "decoder": decoder, "mode_lr": {"lora": 1e-3, "full": 1e-4}}
    t0 = time.perf_counter()
    # fish that also run the other modes first, so that parallel workers finish together
    order = sorted(range(args.fish), key=lambda i: (i >= args.mode_fish, i))
    tasks = [{"fish": i, "args": task_args} for i in order]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            per_fish = sorted(pool.map(run_fish, tasks), key=lambda f: f["fish"])
    else:
        per_fish = [run_fish(t) for t in tasks]
    if args.quick:  # the tiny backbone has no pretrained weights: both rows are random twins
        for f in per_fish:
            f["rows"] = {k.replace("pretrained", "random init (as pretrained)"): v
                         for k, v in f["rows"].items()}
    summary = summarise(per_fish)
    lead = "frozen, pretrained" if not args.quick else "frozen, random init (as pretrained)"
    tests = {}
    for mode in ["frozen", *args.modes]:
        a, b = f"{mode}, pretrained", f"{mode}, random init"
        if (t := paired(per_fish, a, b)) is not None:
            tests[f"{a} - {b}"] = t
    for other in summary:
        if other != lead and not other.startswith("chance"):
            if (t := paired(per_fish, lead, other)) is not None:
                tests[f"{lead} - {other}"] = t
    payload = {"settings": {**task_args, "fish": args.fish, "jobs": args.jobs},
               "per_fish": per_fish, "summary": summary, "paired_r": tests,
               "seconds": time.perf_counter() - t0, "loadavg_after": os.getloadavg()}
    path = write_json("decoder_eval", payload, args.out)
    md = markdown(payload, args)
    print(md)
    if not args.quick:
        Path(args.md).write_text(md)
    print(f"wrote {path}")
    return 0


def markdown(payload: dict, args) -> str:
    s = payload["settings"]
    d = s["decoder"]
    lines = [f"# Decoder evaluation on {args.fish} simulated fish of varied design", "",
             "Generated by `python -m benchmarks.decoder_eval` (see its docstring for the fish "
             "designs and statistics). Every prediction causal, scored on the last 20% of each "
             "fish. The decoder is what `rig train` builds with no options: "
             f"`{d['model']}`, first {d['layers']} blocks, window {d['window']}, "
             f"{d['screen']} screened neurons, an MLP frame embedding ({d['embed_hidden']} "
             f"hidden units{', of each frame and its change since the last' if d.get('onsets') else ''}), "
             f"training input noise sd {d['noise']} and gain sd {d['gain']}, "
             f"{d.get('members', 1)} member(s) (embeddings and heads averaged), "
             "mixed with a linear path "
             f"of {d['lags']} lags (lagged ridge) by a share chosen on validation, "
             f"frozen backbone, lr {d['lr']}, up to {d['epochs']} epochs "
             f"(patience {d['patience']}). {s['seeds']} training seeds per fish for the "
             f"frozen rows; LoRA / full fine-tuning (one member) on the first {s['mode_fish']} "
             f"fish x {s['mode_seeds']} seed(s).", "",
             "| model | Pearson r (95% CI over fish) | R² | bout F1 | fish | runs |",
             "|---|---|---|---|---|---|"]
    for name, c in payload["summary"].items():
        r = c["r_mean"]
        lines.append(f"| {name} | {r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                     f"| {c['r2_mean']['mean']:.3f} | {c['bout_f1']['mean']:.3f} "
                     f"| {c['n_fish']} | {c['n_runs']} |")
    shares = [f"{name}: {c['mix']:.2f}" for name, c in payload["summary"].items() if "mix" in c]
    if shares:
        lines += ["", "Transformer share in the mix with the linear path (mean over runs; 0 = "
                  "lagged ridge alone, 1 = the transformer alone): " + "; ".join(shares) + "."]
    lines += ["", "## Paired differences in Pearson r", "",
              "| comparison | mean diff (95% CI over fish) | wins / pairs | Wilcoxon p |",
              "|---|---|---|---|"]
    for name, t in payload["paired_r"].items():
        lines.append(f"| {name} | {t['diff_mean']:+.3f} [{t['ci95'][0]:+.3f}, "
                     f"{t['ci95'][1]:+.3f}] | {t['wins']}/{t['pairs']} | {t['wilcoxon_p']:.3g} |")
    lines += ["", "## Fish", "", "| fish | neurons | frames | rate (Hz) | motor fraction | "
              "indicator | drift sd | photons/s |", "|---|---|---|---|---|---|---|---|"]
    for f in payload["per_fish"]:
        g = f["design"]
        if "n_neurons" in g:
            lines.append(f"| {f['fish']} | {g['n_neurons']} | {g['n_frames']} "
                         f"| {g['volume_rate_hz']:g} | {g['motor_fraction']:.3f} "
                         f"| {g['indicator']} | {g['drift_sd']:.2f} | {g['photons']:.0f} |")
    lines += ["", f"Run time {payload['seconds'] / 60:.0f} min on 2 shared CPU cores "
              f"({s['jobs']} worker processes, 1 torch thread each); load average after: "
              f"{', '.join(f'{v:.1f}' for v in payload['loadavg_after'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
