"""Do salient neurons carry the behaviour? Salience of trained decoders vs the simulator's truth.

On a simulated fish (``sims.simulate``; ``truth["motor_mask"]`` marks the behaviour-carrying
neurons, ~4% of all) a decoder is trained with a wide screen (256 of 2,000 neurons, so the
attribution has to rank many non-motor candidates), then its neurons are ranked by
integrated gradients and by gradient x input on held-out frames. Reported: the fraction of
motor neurons among the top 10/20/50, beside the same for the screening correlation alone
(the baseline ranking) and for a random ranking (the base rate).

    python -m benchmarks.decoder_salience [--quick]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import table, write_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--neurons", type=int, default=2000)
    p.add_argument("--frames", type=int, default=1200)
    p.add_argument("--screen", type=int, default=256)
    p.add_argument("--models", nargs="+", default=["minilm", "smollm2:8"],
                   help="backbone specs; NAME:L keeps the first L blocks")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from decoders.model import screen_neurons, screen_scores
    from decoders.salience import salience
    from decoders.train import fit, split_frames
    from sims import FishConfig, simulate

    if args.quick:
        args.neurons, args.frames, args.screen, args.models = 300, 400, 64, ["tiny-llama"]
    s = simulate(FishConfig(n_neurons=args.neurons, seed=0), n_frames=args.frames)
    motor = s.truth["motor_mask"].astype(bool)
    sp = split_frames(s.n_frames)
    test = np.arange(sp.test[0], sp.test[1])
    tops = (10, 20, 50)

    def precision(scores):
        order = np.argsort(-scores, kind="stable")
        return {f"top{k}": float(motor[order[:k]].mean()) for k in tops}

    tr = s.traces[:sp.train[1]].astype(np.float64)
    r = screen_scores(tr, s.tail[:sp.train[1]])
    rows = [{"ranking": "screening |r| (train frames)", **precision(r)},
            {"ranking": "random (base rate)", **{f"top{k}": float(motor.mean()) for k in tops}}]
    screened = screen_neurons(tr, s.tail[:sp.train[1]], args.screen)
    rows[0]["in_screen"] = float(motor[screened].mean())
    for spec in args.models:
        name, _, layers = spec.partition(":")
        t0 = time.perf_counter()
        dec, _ = fit([s], model=name, pretrained=name != "tiny-llama", layers=int(layers or 0),
                     window=16, screen=args.screen, epochs=2 if args.quick else 8, lr=3e-3, batch=8,
                     stride=4 if name == "minilm" else 8)
        for method, steps in (("grad_x_input", 1), ("ig", 8)):
            sc = salience(dec, s.traces, frames=test, method=method, steps=steps,
                          max_frames=32 if args.quick else 96)
            rows.append({"ranking": f"{spec} {method}", **precision(sc),
                         "seconds": time.perf_counter() - t0})
    print(table(rows, ["ranking", *[f"top{k}" for k in tops]]))
    path = write_json("decoder_salience", {"rows": rows, "neurons": args.neurons,
                                           "frames": args.frames, "screen": args.screen,
                                           "motor_fraction": float(motor.mean())}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
