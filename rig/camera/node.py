"""The behaviour camera on the bus: ``Camera`` (a real frame source) and ``SimCamera``.

Both trace every camera frame with ``TailTracker``, fold it into ``BoutDetector`` and publish:

* ``behaviour`` per camera frame: ``angles`` (S,) float32 rad (NaN when the frame could not
  be read); meta ``cum_angle``, ``vigour`` (rad), ``bout`` (in a bout), ``lost`` (trace not
  trustworthy), ``moving`` (bout or lost: the stimulation gate's input), ``camera_frame``
  (the camera's counter) and ``t_ns``; header ``t_acq_ns`` = the camera frame's time on the
  acquisition clock, ``frame`` = ``Camera``: the newest imaging frame seen on ``traces`` (-1
  before any; traces come late, so not always the one the camera frame falls in: use
  ``tail`` for per imaging frame labels), ``SimCamera``: the volume it was rendered for.
* ``camera.frame`` at <= ``preview_fps``: ``image`` (H, W) as acquired and ``points``
  (S + 1, 2) float32 x, y pixels of the traced tail, for the dashboard.
* ``tail`` per imaging frame: ``angles`` (S,) float32, the mean over that frame's exposure
  window of the good camera frames (the decoder's labels); meta ``n_camera``, ``n_lost``,
  ``n_moving`` and ``moving`` (some frame of the window in a bout or lost); header ``frame``
  and ``t_acq_ns`` of the imaging frame.
* ``camera.stats`` once a second (meta): frames, lost traces, dropped camera frames (counter
  gaps), bad frames (wrong size/dtype), bouts; ``SimCamera`` adds tracked-vs-true RMS (deg)
  and the simulator's bout count.

``Camera`` reads a ``FrameSource`` (stack/video/GenICam); imaging frames' exposure windows
come from ``traces`` (``[t_acq_ns, t_acq_ns + imaging_period_s)``). ``SimCamera`` renders the
true camera-rate tail that the simulated microscope publishes on ``sim.tail``.
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
from rig.node import Node, Verb


class TrackSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Tracking and bout settings shared by both camera nodes."""

    n_segments: int = 10
    polarity: str = "dark"  # "dark" tail on a bright background, or "bright"
    max_bend_deg: float = 60.0  # per segment; more is an implausible trace (lost)
    min_contrast: float = 3.0  # grey levels above the search fan's mean
    vigour_window_s: float = 0.05
    bout_on: float = 0.08  # vigour (rad) that starts a bout
    bout_off: float = 0.03  # vigour (rad) that ends it (hysteresis)
    preview_fps: float = 30.0  # camera.frame images for the dashboard


class _Pipeline:
    """Tracker + bouts + exposure labels + counters; publishes through ``node.publish``."""

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
        self.node.publish("behaviour", {"angles": angles}, {
            "cum_angle": float(angles[-1]), "vigour": self.bouts.vigour,
            "bout": self.bouts.in_bout, "lost": bool(lost), "moving": self.bouts.moving,
            "camera_frame": int(index), "t_ns": int(t_ns)}, frame=frame, t_acq_ns=t_ns)
        now = time.monotonic_ns()
        if self.preview_period_ns and points is not None and now >= self._next_preview:
            self._next_preview = now + self.preview_period_ns
            # a copy: the frame buffer is reused before a zero-copy send would have left
            self.node.publish("camera.frame", {"image": image.copy(),
                                               "points": points.astype(np.float32)},
                              {"camera_frame": int(index), "lost": bool(lost)}, frame=frame,
                              t_acq_ns=t_ns)
        return angles

    def publish_label(self, frame: int, t_acq_ns: int, t0: int, t1: int) -> None:
        """``tail`` for one imaging frame: mean good angles over [t0, t1) ns."""
        w = self.avg.mean(t0, t1, self._label)
        self.counts["labels"] += 1
        self.node.publish("tail", {"angles": self._label},
                          {"n_camera": w.n_good, "n_lost": w.n_lost, "n_moving": w.n_moving,
                           "moving": w.n_moving > 0},
                          frame=frame, t_acq_ns=t_acq_ns)

    def stats(self) -> dict:
        return dict(self.counts, fps_setting=self.bouts.fps, moving=self.bouts.moving)

    def maybe_publish_stats(self, extra: dict) -> None:
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + 1.0
            self.node.publish("camera.stats", meta={**self.stats(), **extra})


def _tracker(geometry: dict, s: TrackSettings, shape=None) -> TailTracker:
    return TailTracker(**geometry, n_segments=s.n_segments, polarity=s.polarity,
                       max_bend=math.radians(s.max_bend_deg), min_contrast=s.min_contrast,
                       shape=shape)


class Camera(Node):
    """A real camera (or a replayed stack) traced live; see the module docstring."""

    class Settings(TrackSettings, forbid_unknown_fields=True):
        source: str = "stack"  # "stack", "video" (file/camera index), "genicam", "pkg.mod:Class"
        target: str = ""  # file path, camera index ("0") or GenTL producer (.cti) path
        dataset: str = ""  # HDF5 dataset of a stack ("" = the only one, or "video")
        serial: str = ""  # GenICam camera serial ("" = first found)
        fps: float = 200.0  # camera rate, Hz (stack replay pace; sets the vigour window)
        loop: bool = False  # stack replay: start again at the end
        base: list[float] = []  # (x, y) tail base, pixels (two clicks in the dashboard)
        tip: list[float] = []  # (x, y) resting tail tip, pixels
        imaging_period_s: float = 0.0  # exposure per imaging frame; 0 = spacing of `traces`
        silent_s: float = 1.0  # no frame for this long: count the camera as silent

    subscribe = ("traces",)
    step_interval_s = 0.0  # step() itself waits on the camera (read timeout), never spins

    def setup(self) -> None:
        s = self.settings
        if len(s.base) != 2 or len(s.tip) != 2:
            raise ValueError(f"{self.name}.base/tip: give the tail base and resting tip as "
                             "[x, y] pixels (two clicks in the dashboard's camera panel)")
        kwargs = {}
        if s.source == "stack":
            kwargs = dict(dataset=s.dataset or None, fps=s.fps, loop=s.loop, realtime=True)
        elif s.source == "genicam":
            kwargs = dict(serial=s.serial or None)
        target = int(s.target) if s.source == "video" and s.target.isdigit() else s.target
        self.source = open_source(s.source, target, **kwargs)
        self.source.open()
        tracker = _tracker(TailTracker.points_geometry(s.base, s.tip), s)
        tracker.warm_up()
        self.pipe = _Pipeline(self, tracker, s.fps, s)
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
        self.pipe.tracker = _tracker(geometry, self.settings, self.pipe.tracker.shape)
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
                    self.running = False
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


class SimCamera(Node):
    """The simulated camera: renders ``sim.tail``, traces it with the real tracker."""

    class Settings(TrackSettings, forbid_unknown_fields=True):
        height: int = 256
        width: int = 256
        contrast: float = 70.0  # grey levels
        noise: float = 4.0  # sensor noise std, grey levels
        texture: float = 8.0  # background texture std, grey levels

    subscribe = ("sim.tail",)

    def setup(self) -> None:
        self.renderer = None
        self.pipe = None
        # Load the render and tracking kernels now, so the first volume is on time; the
        # segment count is the simulator's, re-made at the first message if it differs.
        self._start(self.settings.n_segments, 200.0)
        self.renderer.render(np.zeros(self.settings.n_segments, np.float32))
        self.sq_err = 0.0
        self.n_err = 0
        self.true_bouts = 0
        self._was_bout = False
        self.camera_index = 0
        self.last_t = None

    def on_control(self, verb, args: dict) -> None:
        if verb in (Verb.PAUSE, Verb.STOP):
            # The simulator's camera clock runs on through a pause: the gap at the next
            # frames is the pause, not camera frames lost.
            self.last_t = None

    def _start(self, n_seg: int, fps: float) -> None:
        from sims.camera import CameraRenderer  # the sim lives in sims/; rig imports it only here

        s = self.settings
        self.renderer = CameraRenderer((s.height, s.width), n_seg, polarity=s.polarity,
                                       contrast=s.contrast, noise=s.noise, texture=s.texture,
                                       seed=self.seed)
        g = self.renderer.tracker_geometry()
        g.pop("n_segments")
        g.pop("polarity")
        s = msgspec.structs.replace(s, n_segments=n_seg)
        tracker = _tracker(g, s, self.renderer.shape)
        tracker.warm_up()
        self.pipe = _Pipeline(self, tracker, fps, s)

    def on_message(self, msg) -> None:
        true = msg["angles"]  # (n_cam, S) rad
        t_ns = msg["t_ns"]  # (n_cam,) acquisition clock
        if true.ndim != 2 or len(t_ns) != len(true):
            self.counters["bad_sim_tail"] += 1
            return
        fps = float(msg.meta.get("camera_rate_hz", 200.0))
        if self.pipe.tracker.n_segments != true.shape[1] or self.pipe.bouts.fps != fps:
            self._start(true.shape[1], fps)
        bout = msg.arrays.get("bout")
        dt = 1e9 / fps
        for j in range(len(true)):
            if self.last_t is not None and t_ns[j] - self.last_t > 1.5 * dt:
                # the simulator skipped camera time (a dropped sim.tail message)
                self.camera_index += int(round((t_ns[j] - self.last_t) / dt)) - 1
            self.last_t = int(t_ns[j])
            image = self.renderer.render(true[j])
            angles = self.pipe.process(image, self.camera_index, int(t_ns[j]), msg.frame)
            self.camera_index += 1
            if np.all(np.isfinite(angles)):
                self.sq_err += float(np.sum((angles - true[j]) ** 2))
                self.n_err += angles.size
            if bout is not None:
                self.true_bouts += bool(bout[j]) and not self._was_bout
                self._was_bout = bool(bout[j])
        if len(t_ns):
            self.pipe.publish_label(msg.frame, msg.t_acq_ns, int(t_ns[0]), int(t_ns[-1]) + 1)
        self.pipe.maybe_publish_stats(self._truth_stats())

    def _truth_stats(self) -> dict:
        rms = math.degrees(math.sqrt(self.sq_err / self.n_err)) if self.n_err else float("nan")
        return {"tracked_vs_true_rms_deg": rms, "true_bouts": self.true_bouts}

    def stats(self) -> dict:
        return {**(self.pipe.stats() if self.pipe else {}), **self._truth_stats()}

    def summary(self) -> dict:
        return self.stats()
