"""What the dashboard knows about the loop: ring buffers filled off the GUI thread.

The bus thread (``gui.bus_thread``) calls ``LiveStore.add`` for every message it receives;
the panels read the newest data on a screen-rate timer. Every method takes the one lock
briefly, and readers copy only what they draw (a slice of the newest rows), so a burst of
messages never holds up a redraw and a slow redraw never holds up the bus.

Topics and what is kept (see ``gui/__init__.py`` for the fields the panels read):

* ``traces``: the last ``capacity`` frames of dF/F, (frames, N) float32, with frame index
  and acquisition time; a change of N (another fish, another session) starts afresh.
* ``tail`` and ``decoded``: per imaging frame, (frames, S) float32, same bookkeeping;
  ``sim.tail`` (the simulator's true camera-rate tail) becomes ``true_tail``, its mean per
  imaging frame, drawn when no camera publishes ``tail``.
* ``behaviour``: camera-rate cumulative angle, vigour (rad) and bout flag.
* ``heartbeat``: each node's latest heartbeat meta and when it arrived.
* ``stim.fired``, ``stimulus``, bouts (``behaviour`` "bout", else ``sim.tail`` "bout"): time
  marks for the time axes (``marks``); each stimulation's response, once the frames after it
  have come (``gui.responses``).
* ``frame``: the newest imaging frame and a running mean, per plane (meta "plane").
* ``log``: events, a repeated one counted rather than listed again.
* everything: the latest message per topic, counts, message rates, the dashboard's own
  drops and latency.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque

import numpy as np

from gui.responses import Responses
from rig.messages import (ANATOMY, BEHAVIOUR, DECODED, FRAME, HEARTBEAT, LOG, POSTERIOR, SALIENCE,
                          SIM_TAIL, SIM_TRUTH, STIMULUS, STIM_FIRED, TAIL, TRACES, Message)
from rig.telemetry import LatencyHistogram

log = logging.getLogger(__name__)


class Ring:
    """A fixed-capacity ring of equal-width rows with a frame index and a time per row.

    ``total`` counts rows ever pushed, so a reader can ask for exactly the rows it has not
    seen (``since``) without the writer tracking readers.
    """

    def __init__(self, capacity: int, width: int, dtype=np.float32):
        if capacity < 1 or width < 0:
            raise ValueError(f"Ring: capacity {capacity} and width {width} must be >= 1 and >= 0")
        self.capacity = capacity
        self.width = width
        self.rows = np.zeros((capacity, width), dtype)
        self.frames = np.full(capacity, -1, np.int64)
        self.t_ns = np.zeros(capacity, np.int64)
        self.total = 0

    def push(self, row: np.ndarray, frame: int = -1, t_ns: int = 0) -> None:
        i = self.total % self.capacity
        self.rows[i] = row
        self.frames[i] = frame
        self.t_ns[i] = t_ns
        self.total += 1

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def _indices(self, n: int) -> np.ndarray:
        n = min(n, len(self))
        return np.arange(self.total - n, self.total) % self.capacity

    def last(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``n`` rows, oldest first (copies): rows (n, width), frames, t_ns."""
        idx = self._indices(n)
        return self.rows[idx], self.frames[idx], self.t_ns[idx]

    def since(self, seen: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows pushed after the reader's ``seen`` count (at most ``capacity`` of them)."""
        return self.last(max(0, self.total - seen))


class LiveStore:
    """Thread-safe ring buffers and latest values of everything the dashboard draws.

    Parameters
    ----------
    capacity : int
        Imaging frames kept for traces, tail and decoded output (the panels' history).
    camera_capacity : int
        Camera-rate behaviour samples kept.
    """

    RATE_WINDOW_S = 2.0  # message rates are counted over this window
    MEAN_FRAMES = 100  # imaging frames in the running mean image

    def __init__(self, capacity: int = 1024, camera_capacity: int = 20_000):
        self.lock = threading.Lock()
        self.capacity = capacity
        self.camera_capacity = camera_capacity
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new run, or another loop): ``generation`` counts resets, so
        panels know to clear what they drew."""
        with self.lock:
            self.generation = getattr(self, "generation", -1) + 1
            self.traces: Ring | None = None
            self.tail: Ring | None = None
            self.decoded: Ring | None = None
            self.true_tail: Ring | None = None  # simulator's per-frame mean tail (sim.tail)
            self.behaviour = Ring(self.camera_capacity, 3)  # cum_angle rad, vigour, bout
            self.latest: dict[str, Message] = {}
            self.counts: dict[str, int] = defaultdict(int)
            self.versions: dict[str, int] = defaultdict(int)  # bumps on every change
            self.beats: dict[str, tuple[dict, float]] = {}  # node -> (meta, monotonic)
            # [source, level, text, count, seq of the latest], newest last
            self.logs: deque = deque(maxlen=200)
            self.first_t_ns = 0  # acquisition time of this run's first frame
            self.marks = Marks()
            self.responses = Responses()
            self.planes: dict[int, dict] = {}  # plane -> latest (H, W), mean, n, meta
            self.posterior_history: list[tuple] = []  # (n_stims, precision, recall, left)
            self.anatomy: dict = {}  # positions (N,3), regions (N,), region_names
            self.truth: dict = {}  # e.g. connectivity (N,N) or presyn (N,k)
            self.salience: np.ndarray | None = None
            self.latency: dict[str, dict[str, LatencyHistogram]] = defaultdict(
                lambda: {"hop": LatencyHistogram(), "age": LatencyHistogram()})
            self._rate_marks: dict[str, deque] = defaultdict(lambda: deque(maxlen=64))
            self.drops: dict[str, int] = {}
            self.malformed = 0  # the subscriber's rejects plus messages no handler could file
            self.unfiled: dict[str, int] = defaultdict(int)  # topic -> messages a handler refused
            self.received = 0

    # -- writing (bus thread) -----------------------------------------------------------
    def add(self, msg: Message, now_ns: int | None = None) -> None:
        """File one received message."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        t_ns = msg.t_acq_ns or msg.t_send_ns
        with self.lock:
            topic = msg.topic
            self.latest[topic] = msg
            self.counts[topic] += 1
            if topic not in _OWN_VERSION:
                self.versions[topic] += 1
            self._rate_marks[topic].append(time.monotonic())
            hist = self.latency[topic]
            hist["hop"].add(max(0, now_ns - msg.t_send_ns))
            if msg.t_acq_ns:
                hist["age"].add(max(0, now_ns - msg.t_acq_ns))
            handler = _HANDLERS.get(topic)
            if handler is None:
                return
            try:
                handler(self, msg, t_ns)
            except (KeyError, ValueError, IndexError, TypeError) as exc:
                # A message that decodes but lacks what its topic needs (no dff, 0-d dff, a
                # non-numeric meta field): counted and shown, never fatal to the bus thread.
                self.unfiled[topic] += 1
                self.malformed += 1
                if self.unfiled[topic] == 1:
                    log.warning("cannot file a %r message from %s (%s: %s); later ones are "
                                "only counted", topic, msg.source, type(exc).__name__, exc)

    def _frame_row(self, name: str, row: np.ndarray, msg: Message, t_ns: int) -> None:
        ring = getattr(self, name)
        if ring is None or ring.width != row.shape[0]:
            ring = Ring(self.capacity, row.shape[0])
            setattr(self, name, ring)
        ring.push(row, msg.frame, t_ns)

    def _on_traces(self, msg, t_ns):
        self._frame_row("traces", msg.arrays["dff"], msg, t_ns)
        self.first_t_ns = self.first_t_ns or t_ns
        self.responses.on_frame(self.traces, msg.frame)
        if "salience" in msg.arrays:
            self._on_salience(msg, t_ns)

    def _on_tail(self, msg, t_ns):
        self._frame_row("tail", msg.arrays["angles"], msg, t_ns)

    def _on_decoded(self, msg, t_ns):
        self._frame_row("decoded", msg.arrays["pred"], msg, t_ns)
        if "salience" in msg.arrays:
            self._on_salience(msg, t_ns)

    def _on_behaviour(self, msg, t_ns):
        angles = msg.arrays["angles"]
        cum = msg.meta.get("cum_angle")
        cum = float(np.sum(angles)) if cum is None else float(cum)
        bout = bool(msg.meta.get("bout", False))
        self.behaviour.push((cum, float(msg.meta.get("vigour", 0.0)), float(bout)),
                            msg.frame, t_ns)
        self.marks.bout("camera", bout, t_ns)

    def _on_sim_tail(self, msg, t_ns):
        angles = msg.arrays.get("angles")
        if angles is not None and angles.ndim == 2 and len(angles):
            self._frame_row("true_tail", angles.mean(axis=0), msg, t_ns)
        if "bout" in msg.meta:
            self.marks.bout("sim", bool(msg.meta["bout"]), t_ns)

    def _on_stimulus(self, msg, t_ns):
        self.marks.epoch(str(msg.meta.get("name", "?")), t_ns)

    def _on_fired(self, msg, t_ns):
        targets = np.array(msg.arrays["targets"], np.int64).ravel()
        self.marks.stims.append(t_ns)
        self.responses.on_fired(targets, msg.frame, t_ns, self.traces,
                                frame_interval(self.traces))

    def _on_frame(self, msg, t_ns):
        image = msg.arrays["image"]
        if image.ndim != 2:
            raise ValueError(f"frame image: expected (H, W), got {image.shape}")
        plane = int(msg.meta.get("plane", 0))
        kept = self.planes.get(plane)
        if kept is None or kept["latest"].shape != image.shape:
            kept = self.planes[plane] = {"mean": np.zeros(image.shape, np.float32), "n": 0}
        kept["latest"] = np.array(image)
        kept["meta"] = dict(msg.meta)
        # A running mean over the last ~MEAN_FRAMES frames: it follows slow drift, and the
        # first frames are weighted as a plain mean.
        kept["n"] += 1
        weight = 1.0 / min(kept["n"], self.MEAN_FRAMES)
        kept["mean"] += np.float32(weight) * (image.astype(np.float32) - kept["mean"])

    def _on_posterior(self, msg, t_ns):
        meta = msg.meta
        n = meta.get("n_stims")
        if n is None:
            return
        point = (float(n), _num(meta.get("precision")), _num(meta.get("recall")),
                 _num(_stims_left(meta)))
        history = self.posterior_history
        if history and history[-1][0] == point[0]:
            history[-1] = point
        else:
            history.append(point)
            del history[:-4000]

    def _on_heartbeat(self, msg, t_ns):
        self.beats[msg.source] = (msg.meta, time.monotonic())
        self.versions["nodes"] += 1

    def _on_log(self, msg, t_ns):
        text = str(msg.meta.get("text") or msg.meta.get("message") or msg.meta)
        level = str(msg.meta.get("level", "")).lower()
        self.versions[LOG] += 1
        seq = self.versions[LOG]
        for entry in self.logs:  # the same event again (a refusal every plan): count it
            if entry[0] == msg.source and entry[2] == text:
                entry[3] += 1
                entry[4] = seq
                self.logs.remove(entry)
                self.logs.append(entry)
                break
        else:
            self.logs.append([msg.source, level, text, 1, seq])

    def _on_anatomy(self, msg, t_ns):
        arrays = msg.arrays
        if "positions" in arrays and arrays["positions"].ndim == 2:
            anatomy = {"positions": np.array(arrays["positions"], np.float32),
                       "regions": (np.array(arrays["regions"], np.int32)
                                   if "regions" in arrays else None),
                       "region_names": list(msg.meta.get("region_names", []))}
            # The anatomy is republished every few seconds for late joiners: a new version
            # (which re-fits the anatomy views, losing the user's zoom) only when it changed.
            if not _same_anatomy(self.anatomy, anatomy):
                self.anatomy = anatomy
                self.versions[ANATOMY] += 1
        truth = {k: np.array(v) for k, v in arrays.items()
                 if k not in ("positions", "regions")}
        if truth:
            self.truth = truth
            self.versions["truth"] += 1

    def _on_salience(self, msg, t_ns):
        self.salience = np.array(msg.arrays["salience"], np.float32)
        self.versions[SALIENCE] += 1

    def set_subscriber_stats(self, received: int, malformed: int, drops: dict) -> None:
        with self.lock:
            self.received, self.drops = received, dict(drops)
            self.malformed = malformed + sum(self.unfiled.values())

    # -- reading (GUI thread) -----------------------------------------------------------
    def rates(self) -> dict[str, float]:
        """Messages per second per topic over the last ``RATE_WINDOW_S``."""
        now = time.monotonic()
        out = {}
        with self.lock:
            for topic, marks in self._rate_marks.items():
                recent = [t for t in marks if now - t <= self.RATE_WINDOW_S]
                if len(marks) == marks.maxlen and len(recent) == len(marks):
                    # More than the marks hold arrived in the window: time the marks we have.
                    span = max(now - recent[0], 1e-6)
                    out[topic] = len(recent) / span
                else:
                    out[topic] = len(recent) / self.RATE_WINDOW_S
        return out

    def nodes(self) -> dict[str, tuple[dict, float]]:
        """node -> (latest heartbeat meta, seconds since it arrived)."""
        now = time.monotonic()
        with self.lock:
            return {name: (meta, now - t) for name, (meta, t) in self.beats.items()}

    def frames_since(self, name: str, seen: int):
        """(rows, frames, t_ns, total) of ring ``name`` newer than ``seen``; None if empty.

        ``total`` is what the reader passes as ``seen`` next time. A ring that was replaced
        (N changed) has a smaller total than ``seen``: the reader then gets all of it.
        """
        with self.lock:
            ring = getattr(self, name)
            if ring is None:
                return None
            if seen > ring.total:
                seen = 0
            rows, frames, t_ns = ring.since(seen)
            return rows, frames, t_ns, ring.total

    def last_frames(self, name: str, n: int, cols=None):
        """(rows, frames, t_ns) of the newest ``n`` rows of ring ``name``, or None.

        ``cols`` picks columns (e.g. a few neurons) so that only those are copied.
        """
        with self.lock:
            ring = getattr(self, name)
            if ring is None or ring.total == 0:
                return None
            if cols is None:
                return ring.last(n)
            idx = ring._indices(n)
            cols = np.asarray(cols, np.int64)
            cols = cols[(cols >= 0) & (cols < ring.width)]
            return ring.rows[np.ix_(idx, cols)], ring.frames[idx], ring.t_ns[idx]

    def get_latest(self, topic: str) -> Message | None:
        with self.lock:
            return self.latest.get(topic)

    def version(self, key: str) -> int:
        with self.lock:
            return self.versions[key]


# Topics whose handler bumps the topic's version itself, only when what it files changed.
_OWN_VERSION = frozenset({ANATOMY, SALIENCE, LOG})


def frame_interval(ring, n: int = 64) -> float:
    """Seconds per imaging frame: the median over the newest ``n`` frames of the time
    between consecutive frames divided by their index step (0.0 while fewer than 4 steps).

    A median of per-step intervals ignores the bursts a replay or a restart produces, which
    a span over the whole window does not.
    """
    if ring is None or len(ring) < 5:
        return 0.0
    idx = ring._indices(n)  # frame indices and times only: no copy of the rows
    frames, t_ns = ring.frames[idx], ring.t_ns[idx]
    steps = np.diff(frames)
    gaps = np.diff(t_ns)
    ok = (steps > 0) & (gaps > 0)
    if ok.sum() < 4:
        return 0.0
    return float(np.median(gaps[ok] / steps[ok])) / 1e9


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _stims_left(meta: dict):
    """The planner's expected stimulations left, under whichever name it sends."""
    for key in ("stims_to_go", "expected_stims_left", "stims_left"):
        if key in meta:
            return meta[key]
    return None


class Marks:
    """Events for the time axes, in acquisition time (ns): stimulations, visual-stimulus
    epochs and bouts. Bouts come from the camera when one runs, else from the simulator."""

    KEEP = 2000

    def __init__(self):
        self.stims: deque = deque(maxlen=self.KEEP)  # t_ns of each stimulation fired
        self.epochs: deque = deque(maxlen=self.KEEP)  # (t_start_ns, stimulus name)
        self.bouts: deque = deque(maxlen=self.KEEP)  # [t_start_ns, t_end_ns or 0 if open]
        self._bout_source = ""

    def epoch(self, name: str, t_ns: int) -> None:
        if not self.epochs or self.epochs[-1][1] != name:
            self.epochs.append((t_ns, name))

    def bout(self, source: str, on: bool, t_ns: int) -> None:
        if source == "sim" and self._bout_source == "camera":
            return  # the camera sees bouts as the rig would: it wins
        self._bout_source = source
        open_bout = bool(self.bouts) and self.bouts[-1][1] == 0
        if on and not open_bout:
            self.bouts.append([t_ns, 0])
        elif not on and open_bout:
            self.bouts[-1][1] = t_ns


def _same_anatomy(old: dict, new: dict) -> bool:
    if not old or old["region_names"] != new["region_names"]:
        return False
    a, b = old["regions"], new["regions"]
    same_regions = (a is None and b is None) or (
        a is not None and b is not None and np.array_equal(a, b))
    return same_regions and np.array_equal(old["positions"], new["positions"])


_HANDLERS = {
    TRACES: LiveStore._on_traces,
    TAIL: LiveStore._on_tail,
    DECODED: LiveStore._on_decoded,
    BEHAVIOUR: LiveStore._on_behaviour,
    SIM_TAIL: LiveStore._on_sim_tail,
    HEARTBEAT: LiveStore._on_heartbeat,
    LOG: LiveStore._on_log,
    SIM_TRUTH: LiveStore._on_anatomy,
    ANATOMY: LiveStore._on_anatomy,
    SALIENCE: LiveStore._on_salience,
    STIMULUS: LiveStore._on_stimulus,
    STIM_FIRED: LiveStore._on_fired,
    FRAME: LiveStore._on_frame,
    POSTERIOR: LiveStore._on_posterior,
}
