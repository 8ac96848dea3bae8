"""Frame sources: where the camera node gets its frames.

One small interface, ``FrameSource``: ``open()``, ``read() -> Frame | None``, ``close()``.
A lab adds its camera by subclassing it (see ``BaslerSource`` for the pattern) and names it
``"package.module:Class"`` in the config. Vendors' libraries are optional extras, imported
inside ``open()``, never at module import (OpenCV's bundled Qt clashes with PyQt in the
dashboard process): OpenCV for video files and USB/UVC webcams (``VideoSource``), pypylon for
Basler cameras (``BaslerSource``, ``rig[camera]``; ``PYLON_CAMEMU=1`` makes pylon emulate
one), harvesters for any GenICam camera with its vendor's GenTL producer (``GenICamSource``,
``rig[genicam]``).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source that cannot open or read: missing file, missing optional package, no camera."""


class Frame(NamedTuple):
    image: np.ndarray  # (H, W) grey
    index: int  # the camera's frame counter; a gap means dropped frames
    t_ns: int  # timestamp, ns: the camera's clock where it has one, else host receive time
    host_ns: int  # host receive time (time.time_ns), for ``ClockMap``


class FrameSource:
    """Base class of frame sources. ``read`` returns None when no frame is available now
    (a live camera's timeout) or the source is exhausted (``exhausted`` says which)."""

    exhausted = False
    host_clock = True  # Frame.t_ns is already host time; False: a camera clock (ClockMap)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) colour -> (H, W) grey of the same dtype; (H, W) passes through.

    For stacks (read now and then); a live ``VideoSource`` uses OpenCV's ``cvtColor``."""
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3].mean(axis=2).astype(image.dtype)
    return image


class _TiffPages:
    """A TIFF as a (T, H, W[, C]) stack: one page per frame, read on demand; a single page
    that is itself a stack (T, H, W) is read whole."""

    def __init__(self, path: Path):
        import tifffile

        self._file = tifffile.TiffFile(path)
        self._pages = self._file.pages
        first = self._pages[0]
        self._whole = first.asarray() if len(self._pages) == 1 and first.ndim == 3 else None
        self.shape = (self._whole.shape if self._whole is not None
                      else (len(self._pages), *first.shape))
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        return self._whole[i] if self._whole is not None else self._pages[i].asarray()

    def close(self) -> None:
        self._file.close()


STACK_SUFFIXES = (".npy", ".h5", ".hdf5", ".tif", ".tiff")


class StackSource(FrameSource):
    """Frames from a NumPy array, a ``.npy`` file, an HDF5 dataset or a multi-page TIFF.

    Parameters
    ----------
    stack : (T, H, W) array, or a path to ``.npy`` / ``.h5`` / ``.hdf5`` / ``.tif`` / ``.tiff``.
    dataset : HDF5 dataset name (default: the only dataset, or ``"video"``).
    fps : frame rate used for timestamps, Hz.
    loop : start again at the end instead of ending.
    realtime : pace frames to ``fps`` like a camera: ``read`` waits (at most ``timeout_s``)
        until the next frame is due and stamps it with its due time; False reads at once.

    The clock starts at the first ``read``, not at ``open``: a node opens its source at
    setup and reads only once the run starts, and a clock started at ``open`` would replay
    that whole wait's worth of frames at once with stale times.
    """

    def __init__(self, stack, dataset: str | None = None, fps: float = 200.0, loop: bool = False,
                 realtime: bool = False, timeout_s: float = 0.005):
        if fps <= 0:
            raise ValueError(f"StackSource.fps: expected > 0 Hz, got {fps!r}")
        self._spec = stack
        self.dataset = dataset
        self.fps = float(fps)
        self.loop = loop
        self.realtime = realtime
        self.timeout_s = float(timeout_s)
        self._stack = None
        self._file = None
        self._i = 0
        self._t0: int | None = None

    def open(self) -> None:
        spec = self._spec
        if isinstance(spec, (str, Path)):
            path = Path(spec)
            if not path.exists():
                raise SourceError(f"StackSource: {path} does not exist")
            if path.suffix == ".npy":
                try:
                    self._stack = np.load(path, mmap_mode="r")
                except (ValueError, EOFError, OSError) as exc:
                    raise SourceError(f"StackSource: {path} is not a readable .npy "
                                      f"array ({exc})") from None
            elif path.suffix in (".h5", ".hdf5"):
                import h5py

                try:
                    self._file = h5py.File(path, "r")
                except OSError as exc:
                    raise SourceError(f"StackSource: {path} is not a readable HDF5 file "
                                      f"({exc})") from None
                names = [k for k, v in self._file.items() if isinstance(v, h5py.Dataset)]
                name = self.dataset or ("video" if "video" in names
                                        else names[0] if len(names) == 1 else None)
                if name is None or name not in self._file:
                    self.close()
                    raise SourceError(f"StackSource.dataset: choose one of {names} in {path}")
                self._stack = self._file[name]
            elif path.suffix.lower() in (".tif", ".tiff"):
                try:
                    self._file = _TiffPages(path)
                except Exception as exc:  # tifffile raises several types for a bad file
                    raise SourceError(f"StackSource: {path} is not a readable TIFF "
                                      f"({type(exc).__name__}: {exc})") from None
                self._stack = self._file
            else:
                raise SourceError(f"StackSource: {path.suffix} files are not stacks; use "
                                  f"{', '.join(STACK_SUFFIXES)} or a video file with "
                                  "VideoSource")
        else:
            self._stack = np.asarray(spec)
        if self._stack.ndim not in (3, 4) or len(self._stack) == 0:
            shape = self._stack.shape
            self.close()
            raise SourceError(f"StackSource: expected (frames, H, W) with at least one frame, "
                              f"got shape {shape}")
        self._i = 0
        self._t0 = None
        self.exhausted = False

    @property
    def n_frames(self) -> int:
        """Frames in the stack (one pass)."""
        if self._stack is None:
            raise SourceError("StackSource.n_frames: call open() first")
        return len(self._stack)

    def read(self) -> Frame | None:
        if self._stack is None:
            raise SourceError("StackSource.read: call open() first")
        n = len(self._stack)
        if self._i >= n and not self.loop:
            self.exhausted = True
            return None
        if self._t0 is None:
            self._t0 = time.time_ns()
        t = self._t0 + int(round(self._i * 1e9 / self.fps))
        if self.realtime:
            wait_s = (t - time.time_ns()) / 1e9
            if wait_s > self.timeout_s:
                time.sleep(self.timeout_s)  # as a camera driver's fetch waits: no frame yet
                return None
            if wait_s > 0:
                time.sleep(wait_s)
        image = _grey(np.asarray(self._stack[self._i % n]))
        frame = Frame(image, self._i, t, time.time_ns())
        self._i += 1
        return frame

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._stack = None


class VideoSource(FrameSource):
    """A video file or a USB/UVC camera through OpenCV's ``VideoCapture`` (optional).

    Parameters
    ----------
    target : a file path, or an int camera index (0 = first camera).

    After ``open``: ``fps`` is the file's stated rate (0.0 when unknown) and ``n_frames`` its
    stated frame count (0 when unknown, as for a live camera).
    """

    def __init__(self, target):
        self.target = target
        self._cap = None
        self._i = 0
        self.fps = 0.0
        self.n_frames = 0

    def open(self) -> None:
        try:
            import cv2  # optional: OpenCV's bundled Qt must stay out of the dashboard process
        except ImportError:
            raise SourceError("VideoSource needs OpenCV: pip install opencv-python-headless "
                              "(or use StackSource for .npy/.h5 stacks)") from None
        self._cv2 = cv2
        target = self.target
        if isinstance(target, (str, Path)) and not Path(target).exists():
            raise SourceError(f"VideoSource: {target} does not exist")
        self._cap = cv2.VideoCapture(str(target) if isinstance(target, Path) else target)
        if not self._cap.isOpened():
            raise SourceError(f"VideoSource: OpenCV could not open {target!r} (camera unplugged, "
                              "busy, not a video, or a codec OpenCV lacks)")
        self._i = 0
        self.fps = max(0.0, float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0))
        self.n_frames = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))

    def read(self) -> Frame | None:
        """The next frame; None at a file's end. Raises ``SourceError`` when not open, when
        OpenCV fails, or when a live camera gives no frame (unplugged): the node reopens it."""
        if self._cap is None:
            raise SourceError("VideoSource.read: not open (call open(), or the reopen failed)")
        try:
            ok, image = self._cap.read()
        except self._cv2.error as exc:
            raise SourceError(f"VideoSource.read: {exc}") from exc
        host = time.time_ns()
        if not ok:
            if isinstance(self.target, (str, Path)):
                self.exhausted = True
                return None
            # a live camera's read blocks until a frame comes: failing means it is gone
            raise SourceError(f"VideoSource: camera {self.target!r} gave no frame (unplugged?)")
        if image.ndim == 3 and image.shape[2] in (3, 4):  # OpenCV's BGR(A): one pass, uint8
            cv2 = self._cv2
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3
                                 else cv2.COLOR_BGRA2GRAY)
        # OpenCV's POS_MSEC is a file position, or unreliable on live cameras: use host time
        frame = Frame(image, self._i, host, host)
        self._i += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


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


SOURCES = {"stack": StackSource, "video": VideoSource, "basler": BaslerSource,
           "genicam": GenICamSource}


def open_source(kind: str, target, **kwargs) -> FrameSource:
    """A source by name: ``"stack"`` (array/.npy/.h5/.tif), ``"video"`` (file or camera
    index), ``"basler"`` (``target`` = serial or ""), ``"genicam"`` (``target`` = .cti path),
    or a lab's own ``"package.module:Class"`` (a ``FrameSource`` subclass taking ``target``);
    the built-in names are the same seam, spelt short."""
    if ":" in kind:
        from rig.node import load_class

        cls = load_class(kind)
        if not (isinstance(cls, type) and issubclass(cls, FrameSource)):
            raise ValueError(f"camera source {kind!r} is not a rig.camera.FrameSource subclass")
        return cls(target, **kwargs)
    if kind not in SOURCES:
        raise ValueError(f"camera source {kind!r}: choose one of {sorted(SOURCES)} or "
                         "'package.module:Class' for your own FrameSource")
    return SOURCES[kind](target, **kwargs)
