"""Routes tried for the decoder on the harder simulated fish, one training seed each.

Each row changes one thing from ``decoders.DEFAULTS`` (what ``rig train`` does): a longer
window with more blocks, more screened neurons through the learned projection, no linear
path (the transformer alone), LoRA at a higher rate; the GRU and lagged ridge for reference.
Fish from ``benchmarks.decoder_eval.fish_design``; scored on the last 20%.

    python -m benchmarks.decoder_routes [--fish 1 4]
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import table, write_json
from benchmarks.decoder_eval import _score, fish_design

ROUTES = {
    "defaults": {},
    "W=16, 4 blocks": {"window": 16, "layers": 4},
    "128 screened neurons": {"screen": 128},
    "no linear path (transformer alone)": {"lags": 0},
    "LoRA, lr 3e-3": {"finetune": "lora", "lr": 3e-3},
}


def main(argv=None) -> int:
    from decoders import DEFAULTS
    from decoders.baselines import fit_gru, fit_ridge
    from decoders.train import fit
    from sims import simulate

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fish", type=int, nargs="+", default=[1, 4])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for i in args.fish:
        config, frames = fish_design(i)
        s = simulate(config, n_frames=frames)
        for name, change in ROUTES.items():
            t0 = time.perf_counter()
            dec, _ = fit([s], **{**DEFAULTS, **change})
            rows.append({"fish": i, "model": name, "r": _score(dec.predict, s)["model"]["r_mean"],
                         "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
        gru, _ = fit_gru([s], hidden=64, window=DEFAULTS["window"], screen=DEFAULTS["screen"],
                         epochs=20)
        ridge = fit_ridge([s], lags=4, screen=DEFAULTS["screen"])
        for name, model in (("GRU-64", gru), ("ridge, 4 lags", ridge)):
            rows.append({"fish": i, "model": name,
                         "r": _score(model.predict, s)["model"]["r_mean"]})
    print(table(rows, ["fish", "model", "r"]))
    print(f"wrote {write_json('decoder_routes', {'rows': rows, 'defaults': DEFAULTS}, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
