"""The ``Microscope`` node: frames from a real acquisition, ROI traces onto the bus.

It stands where the simulated microscope stands. A reader thread takes frames from a
growing TIFF series (``source = "tiff"``) or from an acquisition PC over ZeroMQ
(``source = "zmq"``), extracts ΔF/F of every ROI (``rig.readers.roi``) and publishes
``traces`` (dff float32 (N,)) stamped with the frame's acquisition time, and every
``frame_every``-th ``frame`` (image uint16 (H, W)) for the dashboard. The node's main
loop only answers control and sends heartbeats.

    [nodes.microscope]
    class = "rig.readers.node:Microscope"
    source = "tiff"
    path = "D:/data/fish3/*.tif"
    rois = "D:/data/fish3/suite2p/plane0/stat.npy"
    shape = [512, 512]
"""
from __future__ import annotations

import threading
import time

import msgspec
import numpy as np

from rig.node import Node, Verb
from rig.readers import ReaderCancelled, ReaderError
from rig.readers.tiff import FramesStopped
from rig.telemetry import LatencyHistogram


class Microscope(Node):
    """A reader source plus online ROI extraction, publishing ``traces`` and ``frame``."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        source: str = "tiff"  # "tiff" (follow files) or "zmq" (frames pushed over the network)
        path: str = ""  # tiff: a file, a folder or a glob of the acquisition's TIFF series
        endpoint: str = "tcp://127.0.0.1:5560"  # zmq: where to listen (see the wire format doc)
        rois: str = ""  # suite2p stat.npy, a label image or a mask stack (.npy)
        shape: list[int] = []  # [H, W]; needed with a stat.npy unless frames come first
        rate_hz: float = 0.0  # frame rate; 0: from the ScanImage header, else 30
        neuropil: float = 0.7
        motion: bool = True
        reference: str = ""  # .npy reference image; "": the mean of the first ref_frames
        ref_frames: int = 20
        crop: int = 256  # side of the central square used for motion correction (px)
        max_shift: int = 20  # px
        baseline_s: float = 60.0
        frame_every: int = 10  # publish every Nth raw frame (0: never)
        timeout_s: float = 5.0  # no frame this long: say so (and keep waiting)
        channels: int = 0  # tiff: interleaved channels/planes; 0 = from the header, else 1
        planes: int = 0
        channel: int = 0
        plane: int = 0

    def setup(self):
        from rig.readers.roi import RoiMasks

        s = self.settings
        if s.source not in ("tiff", "zmq"):
            raise ReaderError(f"microscope source = {s.source!r}: use 'tiff' or 'zmq'")
        if not s.rois:
            raise ReaderError("microscope rois: missing; give a suite2p stat.npy, a label "
                              "image or a mask stack (.npy)")
        if s.shape and len(s.shape) != 2:
            raise ReaderError(f"microscope shape = {s.shape}: give [height, width]")
        self.shape = tuple(s.shape) or None
        # A stat.npy without a shape is loaded on the first frame, which tells the size.
        wait = self.shape is None and RoiMasks.needs_shape(s.rois)
        self.masks = None if wait else RoiMasks.load(s.rois, self.shape)
        if self.masks is not None:
            self.shape = self.masks.shape
        self.reader = self._open_reader()
        self.extractor = None
        self._warm_up()
        self.out = self.thread_publisher("frames")
        self.frames = 0
        self.stalls = 0
        self.failed = ""
        self.extract_time = LatencyHistogram()
        self.counters["errors"] += 0  # the thread updates these while heartbeats read them
        self.counters["msgs_out"] += 0
        self.counters["last_error"] = ""
        self._go = threading.Event()
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rig-microscope", daemon=True)
        self._thread.start()

    def _open_reader(self):
        s = self.settings
        if s.source == "tiff":
            from rig.readers.tiff import TiffFollower

            if not s.path:
                raise ReaderError("microscope path: missing; give the TIFF file, folder or glob")
            return TiffFollower(s.path, self.shape, s.timeout_s, s.channels, s.planes,
                                s.channel, s.plane)
        from rig.readers.network import NetworkReader

        return NetworkReader(s.endpoint, self.shape, s.timeout_s)

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
        rate = s.rate_hz or getattr(self.reader, "rate_hz", None) or 30.0
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
                self.log.info("the acquisition PC said the acquisition has ended")
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

    def _publish(self, got) -> None:
        from rig.readers.tiff import frame_time_ns

        image = got.image
        t_acq = getattr(got, "t_ns", 0) or (frame_time_ns(got) if hasattr(got, "file") else None)
        t_acq = t_acq or time.time_ns()  # unknown: the moment it reached Rig
        if self.extractor is None:
            self.extractor = self._extractor(image)
        t0 = time.perf_counter_ns()
        dff = self.extractor.process(image, np.empty(self.extractor.n, np.float32))
        self.extract_time.add(time.perf_counter_ns() - t0)
        frame = self.frames
        shift = self.extractor.last_shift
        self.out.publish("traces", {"dff": dff}, {"shift": list(shift)}, frame, t_acq)
        self.counters["msgs_out"] += 1
        every = self.settings.frame_every
        if every and frame % every == 0:
            if image.dtype != np.uint16:
                image = np.clip(image, 0, 65535).astype(np.uint16)
            self.out.publish("frame", {"image": image}, {"decimation": every}, frame, t_acq)
            self.counters["msgs_out"] += 1
        self.frames += 1

    def teardown(self):
        if hasattr(self, "_thread"):
            self._quit.set()
            self.reader.cancel()
            self._thread.join(timeout=1.0)
            self.out.sock.close(linger=500)
        if hasattr(self, "reader"):
            self.reader.close()

    def stats(self):
        out = {"frames": getattr(self, "frames", 0), "stalls": getattr(self, "stalls", 0)}
        if getattr(self, "extract_time", None) is not None and self.extract_time.n:
            out["extract_p50_ms"] = self.extract_time.percentile_ms(50)
            out["extract_p99_ms"] = self.extract_time.percentile_ms(99)
        for name in ("dropped", "malformed"):
            if hasattr(getattr(self, "reader", None), name):
                out[name] = getattr(self.reader, name)
        if getattr(self, "failed", ""):
            out["failed"] = self.failed
        return out

    def summary(self):
        return {"frames read": getattr(self, "frames", 0),
                **({"stopped reading": self.failed} if getattr(self, "failed", "") else {})}
