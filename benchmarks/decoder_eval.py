"""The NLP4Neuro claims on simulated fish: pretrained vs random-init twin vs baselines vs chance.

Per fish (``sims.simulate``, one seed each; the decoder's training seed is the fish seed):
time-ordered 70/10/20 split, every decoder causal, scored on the last 20%:

- ``smollm2`` SmolLM2-135M text-pretrained, and its random-init twin (same config);
- ``minilm`` MiniLM-L6 (BERT, 22M) pretrained and random (the "larger beats smaller" claim);
- lagged ridge on the screened neurons and on all neurons, a GRU, and the chance row.

Every LLM decoder: frozen backbone (input map and head trained: AdamW, MSE, early stopping on
the validation part), the same screened neurons (top-k by |r| with the tail on training frames)
and causal running normalisation. Then decoding at longer horizons (tail h frames ahead) on
the first fish. Paired tests over fish compare pretrained with its twin and with ridge.
Writes JSON (benchmarks/results/decoder_eval.json) and a markdown table (docs/decoder_eval.md).

    python -m benchmarks.decoder_eval [--quick] [--fish 3] [--neurons 2000] [--frames 1200]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from benchmarks.common import write_json

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("decoder_eval")


def _simulate(seed: int, neurons: int, frames: int):
    from sims import FishConfig, simulate

    return simulate(FishConfig(n_neurons=neurons, seed=seed), n_frames=frames)


def _score(predict, s, horizon=0):
    from decoders.evaluate import score_sessions
    from decoders.train import split_frames

    start = split_frames(s.n_frames).test[0]
    return score_sessions(lambda x: predict(x, start), [s], horizon=horizon)


def run_fish(s, seed: int, models: dict, common: dict, horizon: int = 0) -> dict:
    from decoders.baselines import fit_gru, fit_ridge
    from decoders.train import fit

    out = {}
    for name, (spec, pretrained) in models.items():
        t0 = time.perf_counter()
        # Encoders score one (last) position per window: denser windows, same data.
        stride = max(1, common["window"] // (4 if spec == "minilm" else 2))
        dec, rec = fit([s], model=spec, pretrained=pretrained, seed=seed, horizon=horizon,
                       stride=stride, **common)
        sc = _score(dec.predict, s, horizon)
        out[name] = {**sc["model"], "seconds": time.perf_counter() - t0,
                     "epochs": len(rec["epochs"]) - 1}
        out["chance (train mean)"] = sc["chance"]
        log.info("seed %d h=%d %-28s r=%.3f R2=%.3f (%.0f s)", seed, horizon, name,
                 sc["model"]["r_mean"], sc["model"]["r2_mean"], out[name]["seconds"])
    for name, kw in {"ridge, 4 lags, screened": dict(screen=common["screen"]),
                     "ridge, 4 lags, all neurons": dict(screen=None)}.items():
        m = fit_ridge([s], lags=4, horizon=horizon, **kw)
        out[name] = _score(lambda x, start: m.predict(x), s, horizon)["model"]
    gru, _ = fit_gru([s], hidden=64, window=common["window"], screen=common["screen"],
                     epochs=max(common["epochs"], 20), batch=common["batch"], seed=seed,
                     horizon=horizon)
    out["GRU-64"] = _score(gru.predict, s, horizon)["model"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny backbones, short fish (smoke test)")
    p.add_argument("--fish", type=int, default=3, help="simulated fish (seeds 0..n-1)")
    p.add_argument("--neurons", type=int, default=2000)
    p.add_argument("--frames", type=int, default=1200, help="imaging volumes per fish (2 Hz)")
    p.add_argument("--screen", type=int, default=64)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--horizons", type=int, nargs="*", default=[4])
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: see benchmarks.decoder)")
    p.add_argument("--out", default=None)
    p.add_argument("--md", default=str(ROOT / "docs" / "decoder_eval.md"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    from decoders import evaluate as ev

    if args.quick:
        models = {"tiny-llama (random)": ("tiny-llama", False),
                  "tiny-gpt2 (random)": ("tiny-gpt2", False)}
        args.fish, args.frames, args.neurons, args.epochs, args.horizons = 2, 300, 200, 2, [2]
    else:
        models = {"SmolLM2-135M pretrained": ("smollm2", True),
                  "SmolLM2-135M random init": ("smollm2", False),
                  "MiniLM-L6 pretrained": ("minilm", True),
                  "MiniLM-L6 random init": ("minilm", False)}
    common = dict(window=args.window, screen=args.screen, epochs=args.epochs, lr=args.lr,
                  batch=8, norm="running", finetune="frozen")
    t0 = time.perf_counter()
    per_fish = []
    horizons = {}
    for seed in range(args.fish):
        s = _simulate(seed, args.neurons, args.frames)
        per_fish.append(run_fish(s, seed, models, common))
        if seed == 0:
            lead = {k: v for k, v in list(models.items())[:2]}
            for h in args.horizons:
                horizons[h] = run_fish(s, seed, lead, common, horizon=h)
    names = [n for n in per_fish[0] if not n.startswith("chance")] + ["chance (train mean)"]
    agg = {n: ev.aggregate([f[n] for f in per_fish]) for n in names}
    first, twin = list(models)[:2]
    tests = {f"{first} vs {twin}": ev.paired([f[first]["r_mean"] for f in per_fish],
                                             [f[twin]["r_mean"] for f in per_fish]),
             f"{first} vs ridge (screened)": ev.paired(
                 [f[first]["r_mean"] for f in per_fish],
                 [f["ridge, 4 lags, screened"]["r_mean"] for f in per_fish])}
    if len(models) > 2:
        small = list(models)[2]
        tests[f"{first} vs {small}"] = ev.paired([f[first]["r_mean"] for f in per_fish],
                                                 [f[small]["r_mean"] for f in per_fish])
    payload = {"settings": {**common, "fish": args.fish, "neurons": args.neurons,
                            "frames": args.frames, "threads": args.threads, "quick": args.quick},
               "per_fish": per_fish, "aggregate": agg, "paired_r": tests,
               "horizons_fish0": {str(h): v for h, v in horizons.items()},
               "seconds": time.perf_counter() - t0}
    path = write_json("decoder_eval", payload, args.out)
    md = _markdown(payload, agg, tests, horizons, args)
    print(md)
    if not args.quick:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md)
    print(f"wrote {path}")
    return 0


def _markdown(payload, agg, tests, horizons, args) -> str:
    from decoders import evaluate as ev

    lines = [f"# Decoder evaluation on simulated fish ({args.fish} fish, {args.neurons} neurons, "
             f"{args.frames} volumes at 2 Hz)", "",
             "Generated by `python -m benchmarks.decoder_eval`; every prediction causal, scored on "
             "the last 20% of each fish (time-ordered 70/10/20 split). Mean ± sd over fish. "
             f"LLM backbones frozen; input map + head trained ({args.epochs} epochs max, early "
             f"stopping), {args.screen} screened neurons, window {args.window}, running "
             "normalisation.", "", ev.table(agg), "",
             "## Paired comparisons of Pearson r over fish", "",
             "| comparison | mean diff | sd | wins | t-test p | Wilcoxon p |",
             "|---|---|---|---|---|---|"]
    for name, t in tests.items():
        lines.append(f"| {name} | {t['diff_mean']:+.3f} | {t['diff_sd']:.3f} "
                     f"| {t['wins']}/{t['n']} "
                     f"| {t['t_p']:.3g} | {t['wilcoxon_p']:.3g} |")
    if horizons:
        lines += ["", "## Longer horizons (fish 0): Pearson r of the tail h volumes ahead", "",
                  "| model | " + " | ".join(f"h={h}" for h in [0, *horizons]) + " |",
                  "|---|" + "---|" * (len(horizons) + 1)]
        fish0 = payload["per_fish"][0]
        for name in [n for n in next(iter(horizons.values())) if not n.startswith("chance")]:
            cells = [fish0[name]["r_mean"]] + [horizons[h][name]["r_mean"] for h in horizons]
            lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += ["", f"Run time {payload['seconds']:.0f} s on {args.threads} CPU threads."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
