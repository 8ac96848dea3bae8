"""Behaviour camera: tracking time per frame, tracking accuracy, bouts, and bus latency.

1. Tracking time per frame, 10 segments, on simulated-camera frames of 256x256 and 640x480:
   the numba tracker (``rig.camera.TailTracker``) beside the plain-NumPy implementation of
   the same algorithm (``tests/naive_camera.py``) in the same run, both after a warm-up.
   Target: <= 1 ms per 256x256 frame (a 700 Hz camera never falls behind).
2. Accuracy on the simulated camera: RMS of tracked minus true segment angles (deg), and
   bout precision/recall against the simulated fish's own bouts.
3. On a real larva (stytra's example video, when stytra's wheel is installed): traced end
   against the tips marked by hand in ``tests/test_camera_stytra.py`` (px per frame), and
   the cumulative angle under noise (sd 10, five seeds), halved contrast, mirroring and a
   90-degree rotation: correlation with the clean trace and the largest rest-frame angle.
4. End-to-end latency, camera frame -> ``behaviour`` message, at 700 Hz through the bus:
   a ``Camera`` node (rig.camera.node) replays rendered frames from a stack at 700 Hz; a
   subscriber in this process takes ``now - t_acq_ns`` on each ``behaviour`` message, where
   ``t_acq_ns`` is the frame's acquisition time (when the source produced it).

    python -m benchmarks.camera [--quick] [--out benchmarks/results/camera.json]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import percentiles_ms, table, write_json
from rig.messages import BEHAVIOUR

ROOT = Path(__file__).resolve().parents[1]


def _naive():
    sys.path.insert(0, str(ROOT))  # the NumPy reference lives beside the tests
    from tests import naive_camera

    return naive_camera


def time_tracking(shape, seconds: float, n_frames: int = 300) -> list[dict]:
    """Per-frame tracking time, numba vs NumPy, on frames of one size."""
    from rig.camera import TailTracker
    from sims.camera import CameraRenderer, fish_tail

    angles, _, _ = fish_tail(max(2.0, n_frames / 300.0), 300.0, 10, seed=1, spont_bout_hz=2.0)
    renderer = CameraRenderer(shape, 10, seed=2)
    frames = np.array([renderer.render(a) for a in angles[:n_frames]])
    tracker = TailTracker(**renderer.tracker_geometry())
    naive = _naive()
    rows = []
    for impl in ("numba", "numpy"):
        if impl == "numba":
            step = tracker.track
        else:
            def step(f):
                return naive.track_like(tracker, f)
        for f in frames[:20]:  # warm-up: numba cache load, numpy first-call overheads
            step(f)
        times = []
        t_end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < t_end or i < 50:
            f = frames[i % len(frames)]
            t0 = time.perf_counter_ns()
            step(f)
            times.append(time.perf_counter_ns() - t0)
            i += 1
        t = np.array(times) / 1e3
        rows.append({"case": f"{shape[1]}x{shape[0]}", "impl": impl, "frames": len(t),
                     "us_p50": float(np.median(t)), "us_p99": float(np.percentile(t, 99)),
                     "us_mean": float(t.mean()), "frames_per_s": float(1e6 / t.mean()),
                     "seg_len_px": tracker.seg_len, "rays": tracker._g.n_rays})
    return rows


def accuracy(seconds: float, fps: float = 300.0) -> dict:
    """Tracked-vs-true RMS and bout precision/recall on the simulated camera (256x256)."""
    from rig.camera import TailTracker, detect_bouts
    from sims.camera import CameraRenderer, fish_tail

    angles, _, true_bouts = fish_tail(seconds, fps, 10, seed=1)
    out = {}
    for polarity in ("dark", "bright"):
        renderer = CameraRenderer((256, 256), 10, polarity=polarity, seed=2)
        tracker = TailTracker(**renderer.tracker_geometry())
        tracked = np.zeros_like(angles)
        for i, a in enumerate(angles):
            tracked[i] = tracker.track(renderer.render(a)).angles
        err = np.degrees(tracked - angles)
        found, _ = detect_bouts(tracked[:, -1], fps)
        spans = [(b.start, b.end) for b in found]
        hit = [any(s < te and ts < e for s, e in spans) for ts, te in true_bouts]
        real = [any(s < te and ts < e for ts, te in true_bouts) for s, e in spans]
        onset = [s - ts for ts, te in true_bouts for s, e in spans if s < te and ts < e]
        out[polarity] = {
            "frames": len(angles), "rms_deg": float(np.sqrt(np.mean(err ** 2))),
            "rms_deg_per_segment": np.sqrt(np.mean(err ** 2, axis=0)).round(3).tolist(),
            "lost_frames": int(tracker.n_lost), "true_bouts": len(true_bouts),
            "found_bouts": len(spans), "recall": float(np.mean(hit)) if hit else float("nan"),
            "precision": float(np.mean(real)) if real else float("nan"),
            "onset_lag_ms_median": float(np.median(onset) / fps * 1e3) if onset else float("nan"),
        }
    return out


def real_video() -> dict | None:
    """Tip errors and robustness on stytra's real larva video; None when it is absent."""
    _naive()  # puts the repository root on the path for ``tests``
    from tests import test_camera_stytra as real

    if real.VIDEO is None:
        return None
    import h5py

    with h5py.File(real.VIDEO, "r") as f:
        video = f["video"][:]
    cum, points, lost = real._trace(video)
    tips = {f: float(np.hypot(*(points[f, -1] - tip))) for f, tip in real.TIPS.items()}
    out = {"tip_error_px": tips, "clean_rest_max_deg": float(np.degrees(
        np.abs(cum[real.REST]).max())), "clean_lost": int(lost.sum()), "perturbed": {}}
    cases = [("noise", s) for s in range(5)] + [("contrast", 0), ("mirror", 0), ("rot90", 0)]
    for how, seed in cases:
        changed, base, tip, sign = real._perturbed(video, how, seed)
        c, _, l2 = real._trace(np.ascontiguousarray(changed), base, tip)
        out["perturbed"][f"{how}{seed if how == 'noise' else ''}"] = {
            "corr": float(np.corrcoef(sign * c, cum)[0, 1]), "lost": int(l2.sum()),
            "rest_max_deg": float(np.degrees(np.abs(c[real.REST]).max()))}
    return out


def bus_latency(seconds: float, fps: float = 700.0) -> dict:
    """Frame -> ``behaviour`` latency through a real proxy and a ``Camera`` node process.

    The node replays 256x256 rendered frames at ``fps`` (each stamped with its due time,
    as a camera stamps exposure), tracks them and publishes; a subscriber here takes
    ``time.time_ns() - t_acq_ns`` on arrival. Both ends use the same host clock.
    """
    import tempfile

    from rig import config as cfg
    from rig.bus import Subscriber
    from rig.supervisor import Supervisor
    from sims.camera import CameraRenderer, fish_tail

    angles, _, _ = fish_tail(2.0, fps, 10, seed=1, spont_bout_hz=2.0)
    renderer = CameraRenderer((256, 256), 10, seed=2)
    frames = np.array([renderer.render(a) for a in angles[:1000]])
    g = renderer.tracker_geometry()
    base = [float(v) for v in g["base"]]
    tip = [base[0] + g["length"] * math.cos(g["direction"]),
           base[1] + g["length"] * math.sin(g["direction"])]
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "frames.npy", frames)
        raw = {"run": {"out_dir": tmp, "heartbeat_s": 0.5},
               "nodes": {"camera": {"class": "rig.camera.node:Camera", "source": "stack",
                                    "target": str(Path(tmp) / "frames.npy"), "fps": fps,
                                    "loop": True, "base": base, "tip": tip,
                                    "n_segments": 10}}}
        sup = Supervisor(cfg.parse(raw), run_dir=Path(tmp) / "run")
        sup.start()
        sub = Subscriber(sup.endpoints.sub, (BEHAVIOUR,), hwm=100_000)
        try:
            lat, node_lat, first, last = [], [], None, None
            t_end = time.monotonic() + seconds + 1.0
            while time.monotonic() < t_end:
                msg = sub.recv(timeout_ms=100)
                if msg is None:
                    continue
                now = time.time_ns()
                if time.monotonic() < t_end - seconds:
                    continue  # the first second: connection and warm-up
                lat.append(now - msg.t_acq_ns)
                node_lat.append(msg.t_send_ns - msg.t_acq_ns)  # frame due -> put on the wire
                idx = msg.meta["camera_frame"]
                first = idx if first is None else first
                last = idx
            cam = sup.stats("camera")
        finally:
            sub.close()
            sup.shutdown()
    p, node_p = percentiles_ms(lat), percentiles_ms(node_lat)  # NaN when nothing arrived
    sent = (last - first + 1) if lat else 0
    return {"fps": fps, "frame": "256x256", "received": len(lat), "sent": sent,
            "p50_us": p["p50_ms"] * 1e3, "p99_us": p["p99_ms"] * 1e3, "max_us": p["max_ms"] * 1e3,
            "node_p50_us": node_p["p50_ms"] * 1e3, "node_p99_us": node_p["p99_ms"] * 1e3,
            "node_dropped": cam.get("dropped", 0), "node_lost": cam.get("lost", 0),
            "seconds": seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.camera",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (~15 s in all)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per tracking case")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/camera.json"))
    args = ap.parse_args(argv)
    seconds = 0.5 if args.quick else args.seconds
    rows = []
    for shape in ((256, 256), (480, 640)):
        rows += time_tracking(shape, seconds)
    print(table(rows, ["case", "impl", "us_p50", "us_p99", "frames_per_s"]))
    acc = accuracy(20.0 if args.quick else 60.0)
    for pol, a in acc.items():
        print(f"sim camera ({pol} tail): RMS {a['rms_deg']:.2f} deg over {a['frames']} frames, "
              f"lost {a['lost_frames']}; bouts {a['found_bouts']}/{a['true_bouts']}, "
              f"precision {a['precision']:.3f} recall {a['recall']:.3f}, "
              f"onset lag {a['onset_lag_ms_median']:.1f} ms")
    real = real_video()
    if real is None:
        print("real video: skipped (pip install --no-deps stytra==0.8.34 for its example)")
    else:
        tips = real["tip_error_px"]
        print("real video, traced end vs hand-marked tip (px): "
              + ", ".join(f"{f}: {e:.1f}" for f, e in tips.items())
              + f"; max {max(tips.values()):.1f}; rest max {real['clean_rest_max_deg']:.2f} deg")
        for name, p in real["perturbed"].items():
            print(f"  {name:<9} corr {p['corr']:.4f}, rest max {p['rest_max_deg']:.2f} deg, "
                  f"lost {p['lost']}")
    lat = bus_latency(3.0 if args.quick else 10.0)
    print(f"frame -> behaviour at {lat['fps']:.0f} Hz through the bus: "
          f"p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us "
          f"({lat['received']}/{lat['sent']} messages); inside the node (frame due -> sent) "
          f"p50 {lat['node_p50_us']:.0f} us, p99 {lat['node_p99_us']:.0f} us")
    path = write_json("camera", {"tracking": rows, "accuracy": acc, "real_video": real,
                                 "bus_latency": lat, "quick": args.quick}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
