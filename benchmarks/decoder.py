"""Decoder latency per imaging frame: the streaming LLM decoder against its baselines.

For each (backbone, N neurons, W frames) the decoder streams frames after a warm-up that fills
the window; one timed step is everything a live frame costs: running normalisation of N
neurons, input map N -> H (no screening: the worst case), the backbone over the W-frame
window, the head. Baselines in the same run: lagged ridge (8 lags, all neurons) and a GRU
decoder (hidden 64) on the same frames. Target on CPU: p99 <= 100 ms per frame (whole-brain
volumes arrive every 250-500 ms).

The default decoder (``decoders.DEFAULTS``: 2 blocks, W = 8, 64 screened neurons of 2,000,
linear path) is also timed with one member and with its default members, whose embeddings
share one backbone pass (K times the batch).

GPU (only when CUDA exists): the same decoder in bf16, eager and with ``torch.compile``
(mode "reduce-overhead", i.e. CUDA graphs), timed with ``torch.cuda.synchronize``.

    python -m benchmarks.decoder [--quick] [--backbone smollm2] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch

from benchmarks.common import percentiles_ms, table, write_json


def _decoder(backbone_model, hidden, name, n, window, n_out=8):
    from decoders.model import Decoder, DecoderConfig, DecoderNet

    config = DecoderConfig(n_neurons=n, n_outputs=n_out, window=window,
                           backbone={"name": name, "pretrained": name not in ("tiny-llama", "gru"),
                                     "seed": 0})
    return Decoder(config, DecoderNet(n, n_out, backbone_model, hidden))


def _time_stream(step, frames, warm: int) -> list[int]:
    for x in frames[:warm]:
        step(x)
    times = []
    for x in frames[warm:]:
        t0 = time.perf_counter_ns()
        step(x)
        times.append(time.perf_counter_ns() - t0)
    return times


def cpu_rows(backbone: str, neurons, windows, n_timed: int,
             layers=()) -> tuple[list[dict], float]:
    from decoders import backbone as bb
    from decoders.model import CausalNorm
    from decoders.stream import StreamingDecoder

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    model, hidden = bb.load(bb.BackboneSpec(backbone, backbone != "tiny-llama", 0))
    load_s = time.perf_counter() - t0
    gru, gru_h = bb.load(bb.BackboneSpec("gru", False, 0))
    variants = {f"{backbone} ({model.config.num_hidden_layers} layers)": (model, hidden, backbone)}
    for L in layers:
        short = copy.deepcopy(model)
        bb._truncate(short, L)
        variants[f"{backbone} (first {L} layers)"] = (short, hidden, backbone)
    variants["gru-64 (baseline)"] = (gru, gru_h, "gru")
    rows = []
    for n in neurons:
        for W in windows:
            frames = rng.normal(0, 1, (W + n_timed, n)).astype(np.float32)
            for label, (m, h, name) in variants.items():
                s = StreamingDecoder(_decoder(m, h, name, n, W))
                rows.append({"device": "cpu", "model": label, "N": n, "W": W,
                             **percentiles_ms(_time_stream(s.push, frames, W))})
            # Lagged ridge streamed: normalise, shift the lag buffer, one (lags*N) x S product.
            lags = 8
            coef = rng.normal(0, 0.01, (lags * n, 8)).astype(np.float32)
            hist = np.zeros((lags, n), np.float32)
            cn = CausalNorm("running", 300.0, np.zeros(n), np.ones(n))

            def ridge_step(x):
                hist[1:] = hist[:-1]
                hist[0] = cn.step(x.astype(np.float64))
                return hist.reshape(-1) @ coef

            rows.append({"device": "cpu", "model": "lagged ridge (baseline)", "N": n, "W": lags,
                         **percentiles_ms(_time_stream(ridge_step, frames, W))})
    for r in rows:
        r["meets_100ms"] = r["p99_ms"] <= 100.0
    return rows, load_s


def default_rows(n_timed: int, n: int = 2000) -> list[dict]:
    """The default decoder streamed, untrained (cost does not need training), with 1 member
    and with DEFAULTS' members."""
    from decoders import DEFAULTS
    from decoders.model import Decoder, DecoderConfig
    from decoders.stream import StreamingDecoder

    d = DEFAULTS
    frames = np.random.default_rng(0).normal(0, 1, (d["window"] + n_timed, n)).astype(np.float32)
    rows = []
    for k in sorted({1, d["members"]}):
        config = DecoderConfig(
            n_neurons=n, n_outputs=8, window=d["window"], screen=list(range(d["screen"])),
            backbone={"name": d["model"], "pretrained": True, "seed": 0, "layers": d["layers"]},
            lags=d["lags"], embed_hidden=d["embed_hidden"], onsets=d["onsets"], members=k)
        s = StreamingDecoder(Decoder.build(config))
        rows.append({"device": "cpu", "model": f"default decoder, {k} member(s)", "N": n,
                     "W": d["window"], **percentiles_ms(_time_stream(s.push, frames, d["window"]))})
    return rows


def gpu_rows(backbone: str, neurons, window: int, n_timed: int) -> list[dict]:
    """bf16 on CUDA, eager and torch.compile(reduce-overhead); [] without CUDA."""
    if not torch.cuda.is_available():
        return []
    from decoders import backbone as bb

    spec = bb.BackboneSpec(backbone, backbone != "tiny-llama", 0)
    model, hidden = bb.load(spec, dtype=torch.bfloat16)
    rows = []
    for n in neurons:
        dec = _decoder(model, hidden, backbone, n, window)
        net = dec.net.to("cuda", torch.bfloat16).eval()
        win = torch.randn(1, window, n, device="cuda", dtype=torch.bfloat16)
        for mode in ("eager", "compile"):
            fn = net if mode == "eager" else torch.compile(net, mode="reduce-overhead")
            with torch.inference_mode():
                for _ in range(10):
                    fn(win)
                torch.cuda.synchronize()
                times = []
                for _ in range(n_timed):
                    t0 = time.perf_counter_ns()
                    fn(win)[:, -1].float().cpu()
                    torch.cuda.synchronize()
                    times.append(time.perf_counter_ns() - t0)
            rows.append({"device": torch.cuda.get_device_name(), "model": f"{backbone} bf16 {mode}",
                         "N": n, "W": window, **percentiles_ms(times)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer timed frames")
    p.add_argument("--backbone", default="smollm2", help="backbone spec (default: smollm2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: on shared, oversubscribed cores 2 threads "
                        "ran 4x slower)")
    p.add_argument("--layers", type=int, nargs="*", default=[8],
                   help="also time the backbone truncated to its first L blocks")
    p.add_argument("--neurons", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--windows", type=int, nargs="+", default=[64, 16])
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/decoder.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_timed = 30 if args.quick else 150
    rows, load_s = cpu_rows(args.backbone, args.neurons, args.windows, n_timed, args.layers)
    if args.backbone == "smollm2":
        rows += default_rows(n_timed)
    rows += gpu_rows(args.backbone, args.neurons, max(args.windows), n_timed)
    print(table(rows, ["device", "model", "N", "W", "p50_ms", "p99_ms", "max_ms"]))
    if not torch.cuda.is_available():
        print("no CUDA device here: GPU rows not measured")
    print(f"backbone load: {load_s:.1f} s; load average {os.getloadavg()} "
          f"on {os.cpu_count()} cores")
    path = write_json("decoder", {"rows": rows, "threads": args.threads, "timed_frames": n_timed,
                                  "backbone_load_s": load_s, "cuda": torch.cuda.is_available(),
                                  "loadavg_after": os.getloadavg(), "cores": os.cpu_count(),
                                  "scheme": "window recomputed per frame "
                                            "(exact online == offline)"},
                      args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
