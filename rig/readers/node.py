"""The ``Microscope`` node: frames from a real acquisition, ROI traces onto the bus.

It stands where the simulated microscope stands. A reader thread takes ``Frame``s from a
reader (``rig.readers.Reader``: the built-in ``"tiff"`` follows a growing TIFF series,
``"zmq"`` receives frames pushed by an acquisition PC; a lab's own is
``"package.module:Class"``), extracts ΔF/F of every ROI (``rig.readers.roi``) and publishes
``traces`` (dff float32 (N,)) stamped with the frame's acquisition time, and every
``frame_every``-th ``frame`` (image uint16 (H, W)) for the dashboard. ``anatomy``
(``positions`` (N, 3) float32, the ROI centroids (x, y, z) in imaging µm, which the SLM
node aims at through its calibration) goes out at the first frame and every 5 s after, for
late joiners. The node's main loop only answers control and sends heartbeats.

    [nodes.microscope]
    class = "rig.readers.node:Microscope"
    reader = "tiff"
    reader_settings = {path = "D:/data/fish3/*.tif", channels = 2}
    rois = "D:/data/fish3/suite2p/plane0/stat.npy"
    shape = [512, 512]
    um_per_px = 1.17
"""
from __future__ import annotations

import threading
import time
from typing import Any

import msgspec
import numpy as np

from rig.devices import open_device
from rig.messages import ANATOMY, FRAME, TRACES
from rig.node import Node, Verb
from rig.readers import READERS, Frame, FramesStopped, Reader, ReaderCancelled, ReaderError
from rig.telemetry import LatencyHistogram

ANATOMY_EVERY_S = 5.0  # as the simulated microscope: dashboards that attach late get it


class Microscope(Node):
    """A reader plus online ROI extraction, publishing ``traces``, ``frame``, ``anatomy``."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        reader: str = "tiff"  # "tiff", "zmq" or "package.module:Class" (a rig.readers.Reader)
        # the reader's own keys: tiff {path, channels, planes, channel, plane, poll_s},
        # zmq {endpoint, hwm} (rig.readers.tiff.TiffFollower, rig.readers.network.NetworkReader)
        reader_settings: dict[str, Any] = {}
        rois: str = ""  # suite2p stat.npy, a label image or a mask stack (.npy)
        shape: list[int] = []  # [H, W]; needed with a stat.npy unless frames come first
        um_per_px: float = 1.0  # imaging pixel size: ROI positions go out in µm
        z_um: float = 0.0  # depth of this imaging plane (anatomy's z)
        rate_hz: float = 0.0  # frame rate; 0: what the reader says (a header), else 30
        neuropil: float = 0.7
        motion: bool = True
        reference: str = ""  # .npy reference image; "": the mean of the first ref_frames
        ref_frames: int = 20
        crop: int = 256  # side of the central square used for motion correction (px)
        max_shift: int = 20  # px
        baseline_s: float = 60.0
        frame_every: int = 10  # publish every Nth raw frame (0: never)
        timeout_s: float = 5.0  # no frame this long: say so (and keep waiting)

    def __init__(self, spec, pub=None):
        super().__init__(spec, pub)
        # set here, not in setup: heartbeats and teardown may come after a failed setup
        self.reader: Reader | None = None
        self._thread: threading.Thread | None = None
        self.frames = 0
        self.stalls = 0
        self.failed = ""
        self.extract_time = LatencyHistogram()

    def setup(self):
        from rig.readers.roi import RoiMasks

        s = self.settings
        if not s.rois:
            raise ReaderError("microscope rois: missing; give a suite2p stat.npy, a label "
                              "image or a mask stack (.npy)")
        if s.shape and len(s.shape) != 2:
            raise ReaderError(f"microscope shape = {s.shape}: give [height, width]")
        if s.um_per_px <= 0:
            raise ReaderError(f"microscope um_per_px = {s.um_per_px}: give the imaging pixel "
                              "size in µm (> 0)")
        self.shape = tuple(s.shape) or None
        # A stat.npy without a shape is loaded on the first frame, which tells the size.
        wait = self.shape is None and RoiMasks.needs_shape(s.rois)
        self.masks = None if wait else RoiMasks.load(s.rois, self.shape)
        if self.masks is not None:
            self.shape = self.masks.shape
        self.reader = open_device(s.reader, Reader, READERS, "microscope reader",
                                  s.reader_settings, shape=self.shape, timeout_s=s.timeout_s)
        self.extractor = None
        self._warm_up()
        self.out = self.thread_publisher("frames")
        self.next_anatomy = 0.0
        self.positions = None  # ROI centroids (N, 3) µm, once the masks are known
        self.counters["errors"] += 0  # the thread updates these while heartbeats read them
        self.counters["msgs_out"] += 0
        self.counters["last_error"] = ""
        self._go = threading.Event()
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rig-microscope", daemon=True)
        self._thread.start()

    def _warm_up(self) -> None:
        """Load the numba kernels from their cache now, not on the first real frame."""
        from rig.readers.roi import RoiMasks, TraceExtractor

        tiny = RoiMasks((16, 16), [(np.array([5, 6], np.int32), np.array([5, 5], np.int32),
                                    np.ones(2, np.float32))])
        TraceExtractor(tiny, 10.0, motion=False, min_pixels=4).process(
            np.zeros((16, 16), np.uint16))

    def _extractor(self, image: np.ndarray):
        from rig.readers.roi import MotionCorrector, RoiMasks, TraceExtractor

        s = self.settings
        if self.masks is None:  # a stat.npy: the first frame tells the size
            self.masks = RoiMasks.load(s.rois, image.shape)
        rate = s.rate_hz or self.reader.rate_hz or 30.0
        motion = False
        if s.motion:
            reference = np.load(s.reference) if s.reference else None
            motion = MotionCorrector(self.masks.shape, reference, s.crop, s.max_shift,
                                     s.ref_frames)
        self.log.info("extracting %d ROIs from %s frames at %.2f Hz", self.masks.n,
                      self.masks.shape, rate)
        return TraceExtractor(self.masks, rate, s.neuropil, motion,
                              {"window_s": s.baseline_s})

    def on_control(self, verb, args):
        if verb in (Verb.START, Verb.RESUME):
            self._go.set()
        elif verb in (Verb.PAUSE, Verb.STOP):
            self._go.clear()

    def _run(self) -> None:
        while not self._quit.is_set():
            if not self._go.wait(0.2):
                continue
            try:
                got = self.reader.next_frame()
            except ReaderCancelled:
                return
            except FramesStopped as exc:
                self.stalls += 1
                self.counters["last_error"] = str(exc)
                self.log.error("%s", exc)
                continue
            except ReaderError as exc:  # wrong size, not a TIFF...: the setup is wrong
                self._fail(str(exc))
                return
            if got is None:
                self.log.info("the reader says the acquisition has ended")
                return
            try:
                self._publish(got)
            except ReaderError as exc:
                self._fail(str(exc))
                return
            except Exception as exc:  # a bug in extraction: say so, never die silently
                self.log.exception("extracting frame failed")
                self._fail(f"{type(exc).__name__}: {exc}")
                return

    def _fail(self, message: str) -> None:
        self.failed = message
        self.counters["errors"] += 1
        self.counters["last_error"] = message
        self.log.error("stopped reading: %s", message)

    def _publish(self, got: Frame) -> None:
        image = got.image
        t_acq = got.t_acq_ns or time.time_ns()  # unknown: the moment it reached Rig
        if self.extractor is None:
            self.extractor = self._extractor(image)
        t0 = time.perf_counter_ns()
        dff = self.extractor.process(image, np.empty(self.extractor.n, np.float32))
        self.extract_time.add(time.perf_counter_ns() - t0)
        frame = self.frames
        shift = self.extractor.last_shift
        self.out.publish(TRACES, {"dff": dff}, {"shift": list(shift)}, frame, t_acq)
        self.counters["msgs_out"] += 1
        every = self.settings.frame_every
        if every and frame % every == 0:
            if image.dtype != np.uint16:
                image = np.clip(image, 0, 65535).astype(np.uint16)
            self.out.publish(FRAME, {"image": image}, {"decimation": every}, frame, t_acq)
            self.counters["msgs_out"] += 1
        if time.monotonic() >= self.next_anatomy:
            self.next_anatomy = time.monotonic() + ANATOMY_EVERY_S
            self._publish_anatomy()
        self.frames += 1

    def _publish_anatomy(self) -> None:
        s = self.settings
        if self.positions is None:  # the ROIs do not move: computed once, on the first frame
            xy = self.masks.centroids() * s.um_per_px  # (N, 2) µm, x first
            self.positions = np.c_[xy, np.full(len(xy), s.z_um)].astype(np.float32)
        self.out.publish(ANATOMY, {"positions": self.positions},
                         {"um_per_px": s.um_per_px, "shape": list(self.masks.shape),
                          "source": s.rois})
        self.counters["msgs_out"] += 1

    def teardown(self):
        if self._thread is not None:
            self._quit.set()
            self.reader.cancel()
            self._thread.join(timeout=1.0)
            self.out.sock.close(linger=500)
        if self.reader is not None:
            self.reader.close()

    def stats(self):
        out = {"frames": self.frames, "stalls": self.stalls}
        if self.extract_time.n:
            out["extract_p50_ms"] = self.extract_time.percentile_ms(50)
            out["extract_p99_ms"] = self.extract_time.percentile_ms(99)
        if self.reader is not None:
            out.update(self.reader.stats())
        if self.failed:
            out["failed"] = self.failed
        return out

    def summary(self):
        return {"frames read": self.frames,
                **({"stopped reading": self.failed} if self.failed else {})}
