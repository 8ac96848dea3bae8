"""Throughput of the simulated fish: volumes per second and times faster than real time.

Cases: 100,000 neurons at 2 Hz (whole brain) and 10,000 at 30 Hz (one plane), plus the
default 2,000 at 2 Hz. Each case runs ``Fish.step`` on the numba kernels and, as the
baseline in the same run, on their vectorised numpy twins (``backend="numpy"``); both
after a warm-up (numba compile/cache load excluded), single-threaded.

    python -m benchmarks.sim [--quick] [--seconds 3] [--out benchmarks/results/sim.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

CASES = ((100_000, 2.0), (10_000, 30.0), (2_000, 2.0))


def time_steps(n_neurons: int, rate_hz: float, backend: str, seconds: float,
               warmup: int = 3) -> dict:
    from sims import Fish, FishConfig

    t0 = time.perf_counter()
    fish = Fish(FishConfig(n_neurons=n_neurons, volume_rate_hz=rate_hz, backend=backend, seed=0))
    build_s = time.perf_counter() - t0
    out = np.empty(n_neurons, np.float32)
    rng = np.random.default_rng(0)
    for _ in range(warmup):
        fish.stimulate(rng.choice(n_neurons, 10, replace=False))
        fish.step(out=out)
    steps = 0
    t0 = time.perf_counter()
    while True:
        if steps % 10 == 0:  # a stimulation every 10 volumes, as in a mapping run
            fish.stimulate(rng.choice(n_neurons, 10, replace=False))
        fish.step(out=out)
        steps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and steps >= 5:
            break
    fps = steps / elapsed
    return {"neurons": n_neurons, "rate_hz": rate_hz, "backend": backend, "steps": steps,
            "seconds": elapsed, "volumes_per_s": fps, "ms_per_volume": 1e3 / fps,
            "x_real_time": fps / rate_hz, "build_s": build_s,
            "cpu_load_at_real_time": rate_hz / fps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sim",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (0.5 s per case)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case and backend")
    ap.add_argument("--out", default="benchmarks/results/sim.json", help="JSON results path")
    args = ap.parse_args(argv)
    seconds = 0.5 if args.quick else args.seconds
    rows = []
    for n, rate in CASES:
        for backend in ("numba", "numpy"):
            rows.append(time_steps(n, rate, backend, seconds))
    print(f"{'neurons':>8} {'rate Hz':>8} {'backend':>8} {'vol/s':>9} {'ms/vol':>8} "
          f"{'x real time':>12} {'speed-up':>9}")
    by = {(r["neurons"], r["rate_hz"], r["backend"]): r for r in rows}
    for r in rows:
        base = by[(r["neurons"], r["rate_hz"], "numpy")]
        r["speedup_vs_numpy"] = r["volumes_per_s"] / base["volumes_per_s"]
        print(f"{r['neurons']:>8} {r['rate_hz']:>8g} {r['backend']:>8} {r['volumes_per_s']:>9.1f} "
              f"{r['ms_per_volume']:>8.2f} {r['x_real_time']:>12.1f} {r['speedup_vs_numpy']:>9.2f}")
    target = all(r["x_real_time"] >= 5 for r in rows if r["backend"] == "numba")
    print(f"target >= 5x real time (numba, all cases): {'met' if target else 'NOT met'}")
    result = {"benchmark": "sim", "quick": args.quick, "rows": rows, "target_5x_met": target,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "numpy": np.__version__, "platform": platform.platform()}}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
