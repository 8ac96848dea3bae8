"""Industrial cameras through their vendors' libraries, as ``FrameSource``s.

``BaslerSource``: Basler cameras through pypylon (``rig[camera]``; ``PYLON_CAMEMU=1`` makes
pylon emulate one, so the driver path is tested with no hardware). ``GenICamSource``: any
GenICam camera through harvesters and its vendor's GenTL producer (``rig[genicam]``). Each
library is imported inside ``open()``: a rig without it still imports Rig, and asking for the
camera says what to install.
"""
from __future__ import annotations

import time
from pathlib import Path

from rig.camera.sources import Frame, FrameSource, SourceError


class GenICamSource(FrameSource):
    """A GenICam camera (Basler, FLIR, Allied Vision, ...) through ``harvesters`` (optional).

    Parameters
    ----------
    cti : path to the vendor's GenTL producer (``.cti``) file.
    serial : camera serial number; None takes the first camera found.
    timeout_s : how long ``read`` waits for a frame before returning None (silent camera).
    """

    host_clock = False

    def __init__(self, cti: str, serial: str | None = None, timeout_s: float = 0.1):
        self.cti = cti
        self.serial = serial
        self.timeout_s = timeout_s
        self._h = None
        self._ia = None

    def open(self) -> None:
        try:
            from genicam.gentl import TimeoutException
            from harvesters.core import Harvester
        except ImportError:
            raise SourceError("GenICamSource needs harvesters: pip install harvesters, and the "
                              "camera vendor's GenTL producer (.cti)") from None
        if not Path(self.cti).exists():
            raise SourceError(f"GenICamSource.cti: {self.cti} does not exist; point it at the "
                              "vendor's GenTL producer file")
        self._timeout_exc = TimeoutException
        self._h = Harvester()
        self._h.add_file(self.cti)
        self._h.update()
        if not self._h.device_info_list:
            raise SourceError("GenICamSource: no camera found (unplugged, or in use elsewhere)")
        sel = {"serial_number": self.serial} if self.serial else 0
        self._ia = self._h.create(sel)
        self._ia.start()

    def read(self) -> Frame | None:
        """The next frame; None when none came within ``timeout_s`` (silent camera). Raises
        ``SourceError`` when not open or on any harvesters/GenTL error: the node reopens it."""
        if self._ia is None:
            raise SourceError("GenICamSource.read: not open (call open(), or the reopen failed)")
        try:
            buf = self._ia.fetch(timeout=self.timeout_s)
        except self._timeout_exc:  # a silent camera: the node counts it
            return None
        except Exception as exc:  # GenTL errors share no base class; re-raised, not swallowed
            raise SourceError(f"GenICamSource.read: {type(exc).__name__}: {exc}") from exc
        host = time.time_ns()
        try:
            with buf:
                comp = buf.payload.components[0]
                image = comp.data.reshape(comp.height, comp.width).copy()
                # GenICam timestamps are device ticks (ns on most cameras); ClockMap aligns them.
                frame = Frame(image, int(buf.frame_id), int(buf.timestamp_ns), host)
        except Exception as exc:
            raise SourceError(f"GenICamSource.read: {type(exc).__name__}: {exc}") from exc
        return frame

    def close(self) -> None:
        if self._ia is not None:
            self._ia.stop()
            self._ia.destroy()
            self._ia = None
        if self._h is not None:
            self._h.reset()
            self._h = None


class BaslerSource(FrameSource):
    """A Basler camera through the vendor's pypylon (optional: ``pip install pypylon``).

    Parameters
    ----------
    target : the camera's serial number; "" takes the first camera found.
    timeout_s : how long ``read`` waits for a frame before returning None (silent camera).
    features : GenICam features set at ``open``, in order, e.g. ``{"PixelFormat": "Mono8",
        "ExposureTime": 2000.0, "AcquisitionFrameRate": 500.0}`` (names as in pylon Viewer).

    Frames are grabbed one by one (none skipped on the host); the camera's block id is the
    frame counter, so frames the camera or the link dropped show as gaps. Timestamps are
    the camera's clock, in ns (GigE ticks are converted with ``GevTimestampTickFrequency``);
    a camera that stamps nothing (pylon's emulation) is timed by the host clock.
    """

    host_clock = False

    def __init__(self, target: str = "", timeout_s: float = 0.1,
                 features: dict | None = None):
        self.serial = str(target)
        self.timeout_s = float(timeout_s)
        self.features = dict(features or {})
        self._cam = None

    def open(self) -> None:
        try:
            from pypylon import genicam, pylon
        except ImportError:
            raise SourceError("BaslerSource needs pypylon: pip install pypylon (or "
                              "pip install 'rig[camera]')") from None
        self._pylon = pylon
        self._errors = (genicam.GenericException,)
        tl = pylon.TlFactory.GetInstance()
        devices = [d for d in tl.EnumerateDevices()
                   if not self.serial or d.GetSerialNumber() == self.serial]
        if not devices:
            raise SourceError(f"BaslerSource: no Basler camera "
                              f"{'with serial ' + repr(self.serial) + ' ' if self.serial else ''}"
                              "found (unplugged, in use elsewhere, or set PYLON_CAMEMU=1 for "
                              "pylon's emulated camera)")
        try:
            self._cam = pylon.InstantCamera(tl.CreateDevice(devices[0]))
            self._cam.Open()
        except self._errors as exc:
            self._cam = None
            raise SourceError(f"BaslerSource: cannot open the camera: {exc}") from None
        nodes = self._cam.GetNodeMap()
        for name, value in self.features.items():
            try:
                nodes.GetNode(name).SetValue(value)
            except (self._errors + (AttributeError, TypeError)) as exc:
                self.close()
                raise SourceError(f"BaslerSource.features: cannot set {name} = {value!r}: "
                                  f"{exc}".splitlines()[0]) from None
        self._tick_ns = 1.0
        try:  # GigE cameras count ticks; USB3 cameras count ns
            self._tick_ns = 1e9 / float(nodes.GetNode("GevTimestampTickFrequency").GetValue())
        except (self._errors + (AttributeError,)):
            pass
        self.host_clock = False
        self._first = True
        self._cam.StartGrabbing(pylon.GrabStrategy_OneByOne)

    def read(self) -> Frame | None:
        """The next frame; None when none came within ``timeout_s``. Raises ``SourceError``
        when not open or when the grab fails (unplugged): the node reopens it."""
        if self._cam is None:
            raise SourceError("BaslerSource.read: not open (call open(), or the reopen failed)")
        pylon = self._pylon
        try:
            res = self._cam.RetrieveResult(int(self.timeout_s * 1000),
                                           pylon.TimeoutHandling_Return)
        except self._errors as exc:
            raise SourceError(f"BaslerSource.read: {exc}".splitlines()[0]) from exc
        host = time.time_ns()
        if res is None or not res.IsValid():
            return None  # a silent camera: the node counts it
        try:
            if not res.GrabSucceeded():
                raise SourceError(f"BaslerSource.read: grab failed: "
                                  f"{res.GetErrorDescription()}")
            image = res.Array  # a copy: the driver's buffer goes back below
            stamp = int(res.TimeStamp)
            index = int(res.BlockID)
        finally:
            res.Release()
        if self._first:  # pylon's emulation stamps 0: time such a camera by the host
            self._first = False
            self.host_clock = stamp == 0
        t_ns = host if self.host_clock else int(round(stamp * self._tick_ns))
        return Frame(image, index, t_ns, host)

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.StopGrabbing()
                self._cam.Close()
            finally:
                self._cam = None
