"""The live decoder of ``rig run --sim`` off the bus: prequential r and per-frame cost.

``decoders.online.OnlineRidgeDecoder`` (frozen backbone, screened inputs, ridge head fitted
after the warm-up and refitted) is fed a simulated fish frame by frame exactly as the node
feeds it, each prediction scored against the true tail before that label is given. Rows:
the pretrained backbone, its random-init twin, and both with ``head_lags=4`` (the head also
reads the last 4 frames' screened inputs). Lagged ridge on the same fish is in
``benchmarks.decoder_eval``.

    python -m benchmarks.decoder_online [--quick] [--frames 400] [--backbone smollm2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import percentiles_ms, table, write_json


def run(s, dec) -> dict:
    from decoders.evaluate import RunningPearson

    score = RunningPearson(s.tail.shape[1])
    times = []
    for f, (x, y) in enumerate(zip(s.traces, s.tail)):
        t0 = time.perf_counter_ns()
        pred = dec.push(f, x)
        if pred is not None:
            score.add(pred, y)  # before its label is used
        dec.label(f, y)
        times.append(time.perf_counter_ns() - t0)
    return {"r": float(np.nanmean(score.r())), "scored": score.n,
            **percentiles_ms(times[dec.warmup + 5:])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--neurons", type=int, default=2000)
    p.add_argument("--backbone", default="smollm2")
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from decoders import backbone as bb
    from decoders.online import OnlineRidgeDecoder
    from sims import FishConfig, simulate

    if args.quick:
        args.backbone, args.frames, args.neurons = "tiny-llama", 200, 300
    s = simulate(FishConfig(n_neurons=args.neurons, seed=1), n_frames=args.frames)
    motor = s.truth["motor_mask"].astype(bool)
    rows = []
    for pretrained in ((True, False) if args.backbone != "tiny-llama" else (False,)):
        model = bb.load(bb.BackboneSpec(args.backbone, pretrained, 0))
        for lags in (0, 4):
            dec = OnlineRidgeDecoder(args.neurons, args.backbone, pretrained, window=16, screen=64,
                                     warmup=args.warmup, refit_every=30, model=model,
                                     head_lags=lags)
            row = run(s, dec)
            row["motor_in_screen"] = float(motor[dec.screen].mean())
            rows.append({"backbone": args.backbone, "pretrained": pretrained,
                         "head_lags": lags, **row})
    print(table(rows, ["backbone", "pretrained", "head_lags", "r", "scored", "motor_in_screen",
                       "p50_ms", "p99_ms"]))
    path = write_json("decoder_online", {"rows": rows, "frames": args.frames,
                                         "neurons": args.neurons, "warmup": args.warmup,
                                         "threads": 1}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
