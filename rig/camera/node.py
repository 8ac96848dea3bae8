"""The behaviour camera on the bus: ``Camera`` traces frames from a real source.

``Camera`` (and the simulator's ``sims.camera.SimCamera``, which shares ``Pipeline``) traces
every camera frame with ``TailTracker``, folds it into ``BoutDetector`` and publishes:

* ``behaviour`` per camera frame: ``angles`` (S,) float32 rad (NaN when the frame could not
  be read or traced: ``lost``); meta ``cum_angle``, ``vigour`` (rad), ``bout`` (in a bout), ``lost`` (trace not
  trustworthy), ``moving`` (bout or lost: the stimulation gate's input), ``camera_frame``
  (the camera's counter) and ``t_ns``; header ``t_acq_ns`` = the camera frame's time on the
  acquisition clock, ``frame`` = ``Camera``: the newest imaging frame seen on ``traces`` (-1
  before any; traces come late, so not always the one the camera frame falls in: use
  ``tail`` for per imaging frame labels), ``SimCamera``: the volume it was rendered for.
* ``camera.frame`` at <= ``preview_fps``: ``image`` (H, W) as acquired and ``points``
  (S + 1, 2) float32 x, y pixels of the traced tail, base to visible tip (on a lost frame,
  the part traced before it failed), for the dashboard.
* ``tail`` per imaging frame: ``angles`` (S,) float32, the mean over that frame's exposure
  window of the good camera frames (the decoder's labels); meta ``n_camera``, ``n_lost``,
  ``n_moving`` and ``moving`` (some frame of the window in a bout or lost); header ``frame``
  and ``t_acq_ns`` of the imaging frame.
* ``camera.stats`` once a second (meta): frames, lost traces, dropped camera frames (counter
  gaps), bad frames (wrong size/dtype), bouts; ``SimCamera`` adds tracked-vs-true RMS (deg)
  and the simulator's bout count.

``Camera`` reads a ``FrameSource`` (stack/video/Basler/GenICam/a lab's own); imaging frames'
exposure windows come from ``traces`` (``[t_acq_ns, t_acq_ns + imaging_period_s)``). A stack or
video file that ends stops the run (``stop_at_end``) unless it loops.
"""
from __future__ import annotations

import collections
import math
import time

import msgspec
import numpy as np

from rig.camera.bouts import BoutDetector
from rig.camera.exposure import ClockMap, ExposureAverager
from rig.camera.sources import SourceError, open_source
from rig.camera.tracker import FrameError, TailTracker
from rig.messages import BEHAVIOUR, CAMERA_FRAME, CAMERA_STATS, TAIL, TRACES
from rig.node import Node, Verb


class TrackSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Tracking and bout settings shared by both camera nodes."""

    n_segments: int = 10
    polarity: str = "dark"  # "dark" tail on a bright background, or "bright"
    max_bend_deg: float = 60.0  # per segment; more is an implausible trace (lost)
    min_contrast: float = 3.0  # grey levels above the search fan's mean
    smooth_degree: int = 2  # direction along the tail as a polynomial; 3-4 for clean video
    vigour_window_s: float = 0.05
    bout_on: float = 0.08  # vigour (rad) that starts a bout
    bout_off: float = 0.03  # vigour (rad) that ends it (hysteresis)
    preview_fps: float = 30.0  # camera.frame images for the dashboard


class Pipeline:
    """Tracker + bouts + exposure labels + counters; publishes through ``node.publish``.

    Shared by every camera node (``Camera`` here, ``sims.camera.SimCamera``)."""

    def __init__(self, node: Node, tracker: TailTracker, fps: float, s: TrackSettings):
        self.node = node
        self.tracker = tracker
        self.bouts = BoutDetector(fps, s.vigour_window_s, s.bout_on, s.bout_off)
        self.avg = ExposureAverager(tracker.n_segments, capacity=max(4096, int(fps * 4)))
        self.preview_period_ns = int(1e9 / s.preview_fps) if s.preview_fps > 0 else 0
        self._next_preview = 0
        self._nan = np.full(tracker.n_segments, np.nan, np.float32)
        self._label = np.zeros(tracker.n_segments, np.float32)
        self.last_index = None
        self.counts = collections.Counter(  # every key present, zero or not, for dashboards
            {k: 0 for k in ("frames", "lost", "dropped", "bad_frames", "bouts", "labels")})
        self._next_stats = 0.0

    def process(self, image, index: int, t_ns: int, frame: int = -1) -> np.ndarray:
        """Track one camera frame and publish ``behaviour`` (+ a preview now and then)."""
        c = self.counts
        c["frames"] += 1
        if self.last_index is not None and index > self.last_index + 1:
            c["dropped"] += index - self.last_index - 1  # the camera's counter skipped
        self.last_index = index
        try:
            r = self.tracker.track(image)
            angles, lost, points = r.angles, r.lost, r.points
        except FrameError as exc:
            c["bad_frames"] += 1
            if c["bad_frames"] == 1:
                self.node.log.warning("camera frame %d refused: %s", index, exc)
            angles, lost, points = self._nan, True, None
        c["lost"] += lost
        ended = self.bouts.update(float(angles[-1]), lost)
        if ended is not None:
            c["bouts"] += 1
        self.avg.add(t_ns, angles, lost, self.bouts.moving)
        self.node.publish(BEHAVIOUR, {"angles": angles}, {
            "cum_angle": float(angles[-1]), "vigour": self.bouts.vigour,
            "bout": self.bouts.in_bout, "lost": bool(lost), "moving": self.bouts.moving,
            "camera_frame": int(index), "t_ns": int(t_ns)}, frame=frame, t_acq_ns=t_ns)
        now = time.monotonic_ns()
        if self.preview_period_ns and points is not None and now >= self._next_preview:
            self._next_preview = now + self.preview_period_ns
            # a copy: the frame buffer is reused before a zero-copy send would have left
            self.node.publish(CAMERA_FRAME, {"image": image.copy(),
                                               "points": points.astype(np.float32)},
                              {"camera_frame": int(index), "lost": bool(lost)}, frame=frame,
                              t_acq_ns=t_ns)
        return angles

    def publish_label(self, frame: int, t_acq_ns: int, t0: int, t1: int) -> None:
        """``tail`` for one imaging frame: mean good angles over [t0, t1) ns."""
        w = self.avg.mean(t0, t1, self._label)
        self.counts["labels"] += 1
        self.node.publish(TAIL, {"angles": self._label},
                          {"n_camera": w.n_good, "n_lost": w.n_lost, "n_moving": w.n_moving,
                           "moving": w.n_moving > 0},
                          frame=frame, t_acq_ns=t_acq_ns)

    def stats(self) -> dict:
        return dict(self.counts, fps_setting=self.bouts.fps, moving=self.bouts.moving)

    def maybe_publish_stats(self, extra: dict) -> None:
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + 1.0
            self.node.publish(CAMERA_STATS, meta={**self.stats(), **extra})


def make_tracker(geometry: dict, s: TrackSettings, shape=None) -> TailTracker:
    return TailTracker(**geometry, n_segments=s.n_segments, polarity=s.polarity,
                       max_bend=math.radians(s.max_bend_deg), min_contrast=s.min_contrast,
                       smooth_degree=s.smooth_degree, shape=shape)


class Camera(Node):
    """A real camera (or a replayed stack) traced live; see the module docstring."""

    class Settings(TrackSettings, forbid_unknown_fields=True):
        source: str = "stack"  # "stack", "video", "basler", "genicam" or "pkg.mod:Class"
        target: str = ""  # file path, camera index ("0") or GenTL producer (.cti) path
        dataset: str = ""  # HDF5 dataset of a stack ("" = the only one, or "video")
        serial: str = ""  # Basler or GenICam camera serial ("" = first found)
        features: dict[str, float | int | bool | str] = {}  # Basler: GenICam features at open
        fps: float = 200.0  # camera rate, Hz (stack replay pace; sets the vigour window)
        loop: bool = False  # stack replay: start again at the end
        stop_at_end: bool = True  # a stack or video file that ends asks the supervisor to stop
        base: list[float] = []  # (x, y) tail base, pixels (two clicks in the dashboard)
        tip: list[float] = []  # (x, y) resting tail tip, pixels
        imaging_period_s: float = 0.0  # exposure per imaging frame; 0 = spacing of `traces`
        silent_s: float = 1.0  # no frame for this long: count the camera as silent

    subscribe = (TRACES,)
    step_interval_s = 0.0  # step() itself waits on the camera (read timeout), never spins

    def setup(self) -> None:
        s = self.settings
        if len(s.base) != 2 or len(s.tip) != 2:
            raise ValueError(f"{self.name}.base/tip: give the tail base and resting tip as "
                             "[x, y] pixels (two clicks in the dashboard's camera panel)")
        target = int(s.target) if s.source == "video" and s.target.isdigit() else s.target
        kwargs = {}
        if s.source == "stack":
            kwargs = dict(dataset=s.dataset or None, fps=s.fps, loop=s.loop, realtime=True)
        elif s.source == "genicam":
            kwargs = dict(serial=s.serial or None)
        elif s.source == "basler":
            target, kwargs = s.serial, dict(features=s.features)
        self.source = open_source(s.source, target, **kwargs)
        self.source.open()
        tracker = make_tracker(TailTracker.points_geometry(s.base, s.tip), s)
        tracker.warm_up()
        self.pipe = Pipeline(self, tracker, s.fps, s)
        self.clock = ClockMap()
        self.pending: collections.deque = collections.deque(maxlen=64)  # imaging frames
        self.last_frame_at = time.monotonic()
        self._next_reopen = 0.0
        self.imaging_frame = -1

    def on_control(self, verb, args: dict) -> None:
        """``SET`` key ``tail``, value ``[base_x, base_y, tip_x, tip_y]`` (pixels): the two
        clicks of the dashboard's camera panel. The new tracker starts on the next frame."""
        if verb != Verb.SET or args.get("key") != "tail":
            return
        value = args.get("value")
        if not (isinstance(value, (list, tuple)) and len(value) == 4):
            raise ValueError(f"{self.name}: SET tail expects [base_x, base_y, tip_x, tip_y] "
                             f"pixels, got {value!r}")
        geometry = TailTracker.points_geometry(value[:2], value[2:])
        self.pipe.tracker = make_tracker(geometry, self.settings, self.pipe.tracker.shape)
        self.log.info("tail set: base (%.1f, %.1f), tip (%.1f, %.1f)", *value)

    def on_message(self, msg) -> None:  # an imaging frame: its exposure window needs a label
        t = int(msg.t_acq_ns)
        period = int(self.settings.imaging_period_s * 1e9)
        if self.pending and self.pending[-1][2] is None:
            f, t0, _ = self.pending[-1]
            self.pending[-1] = (f, t0, t)  # the previous frame's window ends where this starts
        self.pending.append((msg.frame, t, t + period if period else None))
        self.imaging_frame = msg.frame

    def _flush_labels(self, t_cam: int) -> None:
        while self.pending and self.pending[0][2] is not None and self.pending[0][2] <= t_cam:
            f, t0, t1 = self.pending.popleft()
            self.pipe.publish_label(f, t0, t0, t1)

    def step(self) -> None:
        deadline = time.perf_counter() + 0.01  # yield to control and heartbeats every 10 ms
        while time.perf_counter() < deadline:
            try:
                fr = self.source.read()
            except SourceError as exc:
                self._source_failed(exc)
                return
            if fr is None:
                if time.monotonic() - self.last_frame_at > self.settings.silent_s:
                    self.counters["silent_periods"] += 1
                    self.last_frame_at = time.monotonic()
                    self.log.warning("camera silent for %.1f s", self.settings.silent_s)
                if self.source.exhausted:
                    self._source_ended()
                return
            self.last_frame_at = time.monotonic()
            if self.source.host_clock:
                t_acq = fr.t_ns
            else:
                self.clock.update(fr.t_ns, fr.host_ns)
                t_acq = self.clock.to_acq(fr.t_ns)
            self.pipe.process(fr.image, fr.index, t_acq, self.imaging_frame)
            self._flush_labels(t_acq)
            self.pipe.maybe_publish_stats({})

    def _source_ended(self) -> None:
        """A finished stack or video file: nothing more will come; end the run if asked."""
        self.running = False
        self.log.info("camera source ended after %d frames", self.pipe.counts["frames"])
        if self.settings.stop_at_end:
            self.ask_supervisor_to_stop("camera source ended")

    def _source_failed(self, exc: Exception) -> None:
        """Count a failed read (unplugged camera) and try to reopen it once a second."""
        self.counters["source_errors"] += 1
        now = time.monotonic()
        if now < self._next_reopen:
            return
        self._next_reopen = now + 1.0
        self.log.warning("camera read failed (%d so far): %s; reopening",
                         self.counters["source_errors"], exc)
        try:
            self.source.close()
            self.source.open()
        except (SourceError, OSError) as again:
            self.log.warning("camera reopen failed: %s", again)
            return
        # a reopened camera restarts its counter and clock: old pairs and indices no longer hold
        self.clock = ClockMap()
        self.pipe.last_index = None

    def teardown(self) -> None:
        if getattr(self, "source", None) is not None:
            self.source.close()

    def stats(self) -> dict:
        return self.pipe.stats() if hasattr(self, "pipe") else {}

    def summary(self) -> dict:
        return self.stats()
