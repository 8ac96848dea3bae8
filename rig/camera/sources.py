"""Frame sources: where the camera node gets its frames.

One small interface, ``FrameSource``: ``open()``, ``read() -> Frame | None``, ``close()``.
A lab adds its camera by subclassing it (see ``rig.camera.vendors.BaslerSource`` for the
pattern) and names it ``"package.module:Class"`` in the config. Here: stacks (.npy, HDF5,
TIFF) and, through OpenCV, video files and USB/UVC webcams (``VideoSource``); vendors'
cameras (Basler, GenICam) are in ``rig.camera.vendors``. Optional libraries are imported
inside ``open()``, never at module import: OpenCV's bundled Qt clashes with PyQt in the
dashboard process.
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


def open_source(kind: str, target, **kwargs) -> FrameSource:
    """A source by name: ``"stack"`` (array/.npy/.h5/.tif), ``"video"`` (file or camera
    index), ``"basler"`` (``target`` = serial or ""), ``"genicam"`` (``target`` = .cti path),
    or a lab's own ``"package.module:Class"`` (a ``FrameSource`` subclass taking ``target``);
    the built-in names are the same seam, spelt short."""
    from rig.camera.vendors import BaslerSource, GenICamSource

    sources = {"stack": StackSource, "video": VideoSource, "basler": BaslerSource,
               "genicam": GenICamSource}
    if ":" in kind:
        from rig.node import load_class

        cls = load_class(kind)
        if not (isinstance(cls, type) and issubclass(cls, FrameSource)):
            raise ValueError(f"camera source {kind!r} is not a rig.camera.FrameSource subclass")
        return cls(target, **kwargs)
    if kind not in sources:
        raise ValueError(f"camera source {kind!r}: choose one of {sorted(sources)} or "
                         "'package.module:Class' for your own FrameSource")
    return sources[kind](target, **kwargs)
