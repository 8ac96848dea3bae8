"""What ``rig eval`` costs: decoding every frame (before) against only the scored frames.

Only the test part (the last 20%) of a session is scored, so ``score_sessions`` now asks the
decoder for rows from the first test frame on (each from its own causal window, which reaches
back W-1 frames; the running normalisation still sees every frame, which is cheap). The
baseline in the same run decodes every frame and scores the same rows, as ``rig eval`` did.
Both must give the same scores (up to float32 batching round-off).

    python -m benchmarks.decoder_evalcost [--frames 3600] [--neurons 1000] [--layers 2]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import table, write_json


def main(argv=None) -> int:
    from decoders import evaluate as ev
    from decoders.model import Decoder, DecoderConfig, screen_neurons
    from decoders.synthetic import make_session

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=3600)
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--backbone", default="smollm2")
    p.add_argument("--layers", type=int, default=2, help="backbone blocks (rig train's default)")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--screen", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each; the best counts")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = make_session(n_frames=args.frames, n_neurons=args.neurons, seed=0)
    keep = screen_neurons(s.traces, s.tail, args.screen)
    config = DecoderConfig(n_neurons=args.neurons, n_outputs=s.tail.shape[1], window=args.window,
                           backbone={"name": args.backbone, "pretrained": True, "seed": 0,
                                     "layers": args.layers}, screen=keep.tolist(), lags=4)
    torch.manual_seed(0)
    dec = Decoder.build(config)  # untrained weights: cost and equality do not need training
    dec.predict(s.traces[:64])  # warm-up: first-call allocations are not the scheme's cost
    runs = {}
    for _ in range(args.repeats):  # interleaved, best of each: the cores are shared
        for name, predict in (("every frame (before)", lambda x, start: dec.predict(x)),
                              ("scored frames only", dec.predict)):
            t0 = time.perf_counter()
            scores = ev.score_sessions(predict, [s])["model"]
            sec = time.perf_counter() - t0
            runs[name] = (min(sec, runs.get(name, (sec,))[0]), scores)
    (t_all, full), (t_part, part) = runs.values()
    diff = max(abs(full[k] - part[k]) for k in ("r_mean", "r2_mean", "rmse_mean"))
    rows = [{"decoding": name, "seconds": sec, "r_mean": sc["r_mean"]}
            for name, (sec, sc) in runs.items()]
    print(table(rows))
    print(f"speed-up {t_all / t_part:.1f}x; largest score difference {diff:.2g}; "
          f"{args.backbone} first {args.layers} blocks, W={args.window}, {args.frames} frames; "
          f"load average {os.getloadavg()} on {os.cpu_count()} cores (shared: pessimistic)")
    path = write_json("decoder_evalcost", {"rows": rows, "speedup": t_all / t_part,
                                           "max_score_diff": diff, "settings": vars(args),
                                           "loadavg_after": os.getloadavg()}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
