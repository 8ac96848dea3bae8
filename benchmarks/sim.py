"""Throughput of the simulated fish: volumes per second and times faster than real time.

Cases: 100,000 neurons at 2 Hz (whole brain) and 10,000 at 30 Hz (one plane), plus the
default 2,000 at 2 Hz. Each case runs ``Fish.step`` (with a stimulation every 10 volumes)
on the numba kernels and, as the baseline in the same run, without numba
(``backend="numpy"``: vectorised numpy neurons, plain-Python behaviour loop); both after a
warm-up (numba compile/cache load excluded), single-threaded. Then a per-part breakdown of
one volume and the wall time of a 10-minute ``simulate()`` session.

    python -m benchmarks.sim [--quick] [--seconds 3] [--out benchmarks/results/sim.json]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import table, write_json

ROOT = Path(__file__).resolve().parents[1]

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


def breakdown(n_neurons: int, rate_hz: float, repeats: int) -> dict:
    """ms per volume of each part of ``Fish.step``: random draws, neuron update, behaviour."""
    from sims import Fish, FishConfig
    from sims import _kernels as K

    fish = Fish(FishConfig(n_neurons=n_neurons, volume_rate_hz=rate_hz, seed=0))
    fish.step()
    a, rng, out = fish.anatomy, np.random.default_rng(0), np.empty(n_neurons, np.float32)

    def draws():
        rng.random(out=fish._u, dtype=np.float32)
        rng.standard_normal(out=fish._zn, dtype=np.float32)
        rng.standard_normal(out=fish._zd, dtype=np.float32)

    def neurons(kernel):
        return lambda: kernel(fish._lat, a.src, a.gain, a.thresh, a.base, fish._forced[0],
                              fish._log_gain, fish._c_rise, fish._c_decay, fish._inv_bright,
                              fish._u, fish._zn, fish._zd, fish.dt, fish._a_rise, fish._a_decay,
                              fish._amp, 5.0, fish._drift_a, fish._drift_s, 1.0, out)

    n_cam = int(np.ceil(fish._ratio))
    tail = np.empty((n_cam, fish.config.n_segments), np.float32)
    bout = np.empty(n_cam, bool)

    def behaviour(kernel):
        dt_c = 1.0 / fish.config.camera_rate_hz
        return lambda: kernel(fish._bstate, fish._bparams, 1.0, 1.0, dt_c, n_cam, fish._bz,
                              fish._bu, tail, bout, fish._blat)

    parts = {"random draws (numpy Generator)": draws,
             "neuron update, numba": neurons(K.neuron_step),
             "neuron update, numpy": neurons(K.neuron_step_numpy),
             "behaviour, numba": behaviour(K.behaviour_step),
             "behaviour, plain Python": behaviour(K.behaviour_step.py_func)}
    result = {}
    for name, fn in parts.items():
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        result[name] = (time.perf_counter() - t0) / repeats * 1e3
    return result


def time_simulate(n_neurons: int, duration_s: float) -> dict:
    """Wall time of ``sims.simulate`` for a whole session (what ``rig simulate`` does)."""
    from sims import FishConfig, simulate

    t0 = time.perf_counter()
    s = simulate(FishConfig(n_neurons=n_neurons, seed=0), duration_s=duration_s, stim_every=10)
    wall = time.perf_counter() - t0
    return {"neurons": n_neurons, "duration_s": duration_s, "frames": s.n_frames,
            "wall_s": wall, "x_real_time": duration_s / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sim",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (0.5 s per case)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case and backend")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/sim.json"),
                    help="JSON results path")
    args = ap.parse_args(argv)
    seconds = 0.5 if args.quick else args.seconds
    rows = []
    for n, rate in CASES:
        for backend in ("numba", "numpy"):
            rows.append(time_steps(n, rate, backend, seconds))
    by = {(r["neurons"], r["rate_hz"], r["backend"]): r for r in rows}
    for r in rows:
        base = by[(r["neurons"], r["rate_hz"], "numpy")]
        r["speedup_vs_numpy"] = r["volumes_per_s"] / base["volumes_per_s"]
    print(table(rows, ["neurons", "rate_hz", "backend", "volumes_per_s", "ms_per_volume",
                       "x_real_time", "speedup_vs_numpy"]))
    target = all(r["x_real_time"] >= 5 for r in rows if r["backend"] == "numba")
    print(f"target >= 5x real time (numba, all cases): {'met' if target else 'NOT met'}")
    parts = {f"{n}@{rate:g}Hz": breakdown(n, rate, 5 if args.quick else 20)
             for n, rate in CASES[:2]}
    for case, figures in parts.items():
        print(f"\nbreakdown, {case} (ms per volume)")
        print(table([{"part": name, "ms": ms} for name, ms in figures.items()]))
    sim = time_simulate(2000, 60.0 if args.quick else 600.0)
    print(f"\nsimulate(): {sim['neurons']} neurons, {sim['duration_s']:g} s session at 2 Hz "
          f"with stimulations in {sim['wall_s']:.2f} s ({sim['x_real_time']:.0f}x real time)")
    path = write_json("sim", {"quick": args.quick, "rows": rows, "target_5x_met": target,
                              "breakdown_ms": parts, "simulate": sim}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
