"""Dashboard benchmark: redraw cost per frame at 2,000 and 10,000 neurons.

The real ``MainWindow`` (offscreen, 1800 x 1050, every dock shown as ``rig gui`` lays out
that size) is fed synthetic messages with the loop's exact fields, stamped by a steady 30 Hz
acquisition clock, one imaging frame per redraw (one new frame every 33 ms):
traces, tail, decoded, 10 camera-rate behaviour samples, a 256 x 256 camera frame, a
posterior block of 200 x 200 every 10 frames, heartbeats of 5 nodes every 15 frames. Per
frame it times (a) filing the messages into the store (the bus thread's work), (b) the
window's redraw timer tick (the panels due: each panel has a top rate, ``gui.app.REDRAW_HZ``)
and (c) Qt painting what changed (the event loop's pending updates), as the live window
does. "window total" (redraw + paint) is one frame's drawing, the figure held to
``TARGET_MS``; ``every panel`` rows refresh and paint all panels every frame (the worst case).
Paint is split by dock (``PaintClock``): the GUI thread's CPU time from one widget's paint to
the next is that widget's dock's; "window" is the rest (layouts, the scenes' dirty-region
bookkeeping before painting).
The baseline, in the same run, is the activity raster drawn the way ECOSYSTEM.md warns
against: the float (N x 300) history rolled and handed to ``setImage`` with auto levels
every frame, and one curve per selected trace.

    python -m benchmarks.gui [--quick] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import percentiles_ms, table, write_json
from rig.messages import (ANATOMY, BEHAVIOUR, CAMERA_FRAME, DECODED, HEARTBEAT, POSTERIOR,
                          SIM_TRUTH, STIMULUS, STIM_FIRED, STIM_PLAN, TAIL, TRACES)

SIZES = (2_000, 10_000)
BUDGET_MS = 1000 / 30  # one frame at 30 frames/s
TARGET_MS = 16.0  # redraw + paint per frame at p50 (issue 17), leaving the rest for input
WINDOW = 300  # frames in the raster (the ActivityPanel default)


class Feed:
    """Synthetic loop output for ``n`` neurons: positions, frames, posterior, heartbeats."""

    def __init__(self, n: int, seed: int = 0):
        from rig.messages import Message

        self.Message = Message
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.positions = np.column_stack([self.rng.uniform(20, 830, n),
                                          self.rng.uniform(-230, 230, n),
                                          self.rng.uniform(30, 250, n)]).astype(np.float32)
        self.regions = self.rng.integers(0, 7, n).astype(np.int16)
        self.dff = self.rng.standard_normal((64, n)).astype(np.float32)
        self.image = self.rng.integers(0, 255, (256, 256)).astype(np.uint8)
        self.frame = 0
        self.t0 = time.time_ns()

    def setup_messages(self) -> list:
        M = self.Message
        presyn = self.rng.integers(0, self.n, (self.n, 8)).astype(np.int32)
        return [M(ANATOMY, {"positions": self.positions, "regions": self.regions},
                  {"region_names": [f"r{i}" for i in range(7)]}),
                M(SIM_TRUTH, {"presyn": presyn}),
                M("salience", {"salience": self.rng.random(self.n).astype(np.float32)})]

    def next_messages(self) -> list:
        M, f = self.Message, self.frame
        self.frame += 1
        t = self.t0 + f * 33_333_333  # the microscope's steady 30 Hz clock
        tail = (np.sin(f / 7 + np.arange(8) / 4) * 0.3).astype(np.float32)
        out = [M(TRACES, {"dff": self.dff[f % 64]}, frame=f, t_acq_ns=t, t_send_ns=t),
               M(TAIL, {"angles": tail}, frame=f, t_acq_ns=t, t_send_ns=t),
               M(DECODED, {"pred": tail * 0.8}, {"moving": False}, frame=f, t_acq_ns=t,
                 t_send_ns=t),
               M(STIM_PLAN, {"targets": self.rng.integers(0, self.n, 20).astype(np.int32),
                               "power_mw": np.full(20, 5, np.float32)}, frame=f, t_send_ns=t),
               M(CAMERA_FRAME, {"image": self.image,
                                  "points": np.zeros((9, 2), np.float32)}, t_send_ns=t)]
        out += [M(BEHAVIOUR, {"angles": tail}, {"cum_angle": float(tail[-1]), "vigour": 0.1,
                                                  "bout": (f // 20) % 3 == 0},
                  frame=f, t_acq_ns=t + i * 3_000_000, t_send_ns=t) for i in range(10)]
        out.append(M(STIMULUS, None, {"name": ("forward", "still", "left")[(f // 90) % 3],
                                        "protocol": "default"}, frame=f, t_acq_ns=t,
                     t_send_ns=t))
        if f % 15 == 5:
            out.append(M(STIM_FIRED, {"targets": self.rng.integers(0, self.n, 10).astype(
                np.int32)}, frame=f, t_acq_ns=t, t_send_ns=t))
        if f % 10 == 0:
            ids = np.arange(200, dtype=np.int32)
            p = self.rng.random((200, 200)).astype(np.float32)
            out.append(M(POSTERIOR, {"marginals": p, "ids": ids,
                                       "out_degree": self.rng.random(self.n).astype(np.float32)},
                         {"n_stims": f // 15, "confident_fraction": 0.5, "stop": False,
                          "precision": min(1.0, f / 600), "recall": min(1.0, f / 900),
                          "stims_to_go": max(0, 300 - f // 15)},
                         t_send_ns=t))
        if f % 15 == 0:
            beat = {"status": "running", "running": True, "armed": False, "msgs_in": f,
                    "malformed": 0, "drops": {}, "counters": {"msgs_out": f},
                    "latency": {"traces": {"hop": {"c": {"30": f}, "max": 2_000_000},
                                           "age": {"c": {"35": f}, "max": 3_000_000}}}}
            out += [M(HEARTBEAT, meta=beat, source=f"node{i}", t_send_ns=t)
                    for i in range(5)]
        return out


class PaintClock:
    """Splits the GUI thread's paint CPU time among the window's docks.

    Qt paints one widget after another; an event filter notes when each widget's Paint
    event starts, so the time up to the next one (or to the end) is that widget's.
    """

    def __init__(self, window):
        from PyQt6.QtCore import QEvent, QObject
        from PyQt6.QtWidgets import QDockWidget, QWidget

        self.starts: list[tuple[int, object]] = []
        self.dock: dict[int, str] = {}
        paint, starts = QEvent.Type.Paint, self.starts

        class Filter(QObject):
            def eventFilter(self, obj, event):
                if event.type() == paint:
                    starts.append((time.thread_time_ns(), obj))
                return False

        self.filter = Filter()
        for widget in window.findChildren(QWidget):
            owner = widget
            while owner is not None and not isinstance(owner, QDockWidget):
                owner = owner.parentWidget()
            self.dock[id(widget)] = owner.objectName().removeprefix("dock-") if owner \
                else "window"
            widget.installEventFilter(self.filter)

    def split(self, begin_ns: int, end_ns: int) -> dict[str, int]:
        """CPU ns per dock between ``begin_ns`` and ``end_ns`` (thread time); then forget."""
        spent = {"window": (self.starts[0][0] if self.starts else end_ns) - begin_ns}
        ends = [t for t, _ in self.starts[1:]] + [end_ns]
        for (t, widget), t_end in zip(self.starts, ends):
            name = self.dock.get(id(widget), "window")
            spent[name] = spent.get(name, 0) + t_end - t
        self.starts.clear()
        return spent


def bench_window(app, n: int, warmup: int, frames: int, everything: bool) -> dict:
    from gui.app import MainWindow

    window = MainWindow(fps=30)
    window.redraw_timer.stop()  # this benchmark calls redraw itself, once per frame
    window.status_timer.stop()
    window.resize(1800, 1050)
    window.default_layout(1800)  # every dock shown, as ``rig gui`` lays out this size
    window.show()
    feed = Feed(n)
    for msg in feed.setup_messages():
        window.store.add(msg)
    clock = PaintClock(window)
    ingest, redraw, paint, cpu, redraw_cpu = [], [], [], [], []
    per_panel = {name: [] for name in window.refreshers}
    per_dock = {name: [] for name in [*window.docks, "window"]}
    period = 1.0 / 30
    for i in range(warmup + frames):
        msgs = feed.next_messages()
        t0 = time.perf_counter_ns()
        for msg in msgs:
            window.store.add(msg)
        t1 = time.perf_counter_ns()
        c1 = time.thread_time_ns()
        if everything:
            for name, refresh in window.refreshers.items():
                ta = time.perf_counter_ns()
                refresh(window.store)
                if i >= warmup:
                    per_panel[name].append(time.perf_counter_ns() - ta)
        else:
            # The window's own tick on a frame clock: frame i is at i / 30 s, whatever this
            # machine's speed (no sleeping; panels are due as they would be live).
            window.redraw(now=i * period)
        t2 = time.perf_counter_ns()
        c2 = time.thread_time_ns()
        clock.starts.clear()
        app.processEvents()  # paints what the refreshes changed, as the event loop would
        t3 = time.perf_counter_ns()
        c3 = time.thread_time_ns()
        spent = clock.split(c2, c3)
        if i >= warmup:
            for name, values in per_dock.items():
                values.append(spent.get(name, 0))
            cpu.append(c3 - c1)
            redraw_cpu.append(c2 - c1)
            ingest.append(t1 - t0)
            redraw.append(t2 - t1)
            paint.append(t3 - t2)
    window.shutdown()
    window.close()
    total = np.array(redraw) + np.array(paint)
    return {"ingest": percentiles_ms(ingest), "redraw": percentiles_ms(redraw),
            "paint": percentiles_ms(paint), "total": percentiles_ms(total),
            "cpu": percentiles_ms(cpu), "redraw_cpu": percentiles_ms(redraw_cpu),
            "paint_cpu_ms_by_dock": {k: {"mean_ms": float(np.mean(v) / 1e6),
                                         "p99_ms": float(np.percentile(v, 99) / 1e6)}
                                     for k, v in per_dock.items()},
            "busy": float(total.mean() / 1e6 / BUDGET_MS),
            "panels_p50_ms": {k: percentiles_ms(v)["p50_ms"] for k, v in per_panel.items()
                              if v}}


def bench_activity(app, n: int, warmup: int, frames: int, naive: bool) -> dict:
    """The activity panel alone (fast path), or the baseline redraw of the same raster."""
    import pyqtgraph as pg

    from gui.panels.activity import ActivityPanel
    from gui.store import LiveStore

    store = LiveStore()
    feed = Feed(n)
    panel = ActivityPanel(window=WINDOW)
    panel.resize(900, 700)
    panel.show()
    if naive:
        history = np.zeros((n, WINDOW), np.float32)
        curves = [panel.trace_plot.plot(pen=pg.mkPen("c", width=1)) for _ in range(8)]
    costs, cpu = [], []
    for i in range(warmup + frames):
        for msg in feed.next_messages()[:1]:  # traces only
            store.add(msg)
        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        if naive:
            rows = store.last_frames(TRACES, 1)[0]
            history = np.roll(history, -1, axis=1)
            history[:, -1] = rows[-1]
            panel.image.setImage(history, autoLevels=True)
            recent = store.last_frames(TRACES, WINDOW)[0]
            for k, curve in enumerate(curves):
                curve.setData(recent[:, k] + 2 * k)
        else:
            panel.refresh(store)
        panel.repaint()
        app.processEvents()
        if i >= warmup:
            costs.append(time.perf_counter_ns() - t0)
            cpu.append(time.thread_time_ns() - c0)
    panel.close()
    return {**percentiles_ms(costs), "cpu_p50_ms": percentiles_ms(cpu)["p50_ms"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames (a smoke run)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/gui.json)")
    args = parser.parse_args(argv)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["rig bench gui"])
    warmup, frames = (10, 40) if args.quick else (30, 200)
    rows, panels, docks = [], {}, {}
    for n in SIZES:
        for everything in (False, True):
            result = bench_window(app, n, warmup, frames, everything)
            label = "every panel" if everything else "window"
            if everything:
                panels[n] = result["panels_p50_ms"]
            else:
                docks[n] = result["paint_cpu_ms_by_dock"]
            cpu = {"redraw": result["redraw_cpu"], "total": result["cpu"]}
            parts = ("ingest", "redraw", "paint", "total") if not everything else ("total",)
            for part in parts:
                rows.append({"neurons": n, "what": f"{label} {part}", **result[part],
                             "cpu_p50_ms": cpu[part]["p50_ms"] if part in cpu else "",
                             "cpu_p99_ms": cpu[part]["p99_ms"] if part in cpu else "",
                             "busy_at_30fps": result["busy"] if part == "total" else ""})
        for naive in (False, True):
            stats = bench_activity(app, n, warmup, frames, naive)
            what = "activity baseline" if naive else "activity panel"
            rows.append({"neurons": n, "what": what, **stats})
    for row in rows:
        row["fits_30fps"] = "yes" if row["p99_ms"] < BUDGET_MS else "no"
    print(table(rows, ["neurons", "what", "p50_ms", "p99_ms", "max_ms", "cpu_p50_ms",
                       "cpu_p99_ms", "busy_at_30fps", "fits_30fps"]))
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall-clock "
          "figures include waiting for a core; cpu_*_ms are the GUI thread's own CPU time.\n"
          "window total = redraw + paint, one frame's drawing; target: p50 <= "
          f"{TARGET_MS:.0f} ms at {SIZES[-1]:,} neurons.\n"
          "busy_at_30fps: mean (redraw + paint) / 33.3 ms, the share of the GUI thread spent "
          "drawing at 30 frames/s (the rest is free for input).")
    print("\nper panel, p50 ms of refresh (paint excluded):")
    names = list(next(iter(panels.values())))
    print(table([{"neurons": n, **{k: v[k] for k in names}} for n, v in panels.items()],
                ["neurons", *names]))
    print("\npaint CPU per dock, mean ms per frame (p99 in brackets):")
    names = list(next(iter(docks.values())))
    print(table([{"neurons": n, **{k: f"{v[k]['mean_ms']:.2f} ({v[k]['p99_ms']:.1f})"
                                   for k in names}} for n, v in docks.items()],
                ["neurons", *names]))
    path = write_json("gui", {"rows": rows, "panels_p50_ms": panels,
                              "paint_cpu_ms_by_dock": docks, "frames": frames,
                              "load_average": os.getloadavg()[0], "cores": os.cpu_count(),
                              "window_px": [1800, 1050], "budget_ms": BUDGET_MS,
                              "target_ms": TARGET_MS, "quick": args.quick}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
