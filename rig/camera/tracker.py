"""Head-restrained tail tracking: a grey frame in, segment angles out.

The camera node calls ``TailTracker.track`` on every camera frame (200-700 Hz); the traced
angles become ``behaviour`` messages, the decoder's labels (``tail``) and the quiescence
gate of the stimulator. Three steps per frame (``rig.camera._kernels``):

1. follow the ridge from a fixed base point in half-segment steps, each step's direction
   judged along a whole segment's length within a fan around the last direction, until the
   ridge fades, bends implausibly or leaves the frame (the visible tail ends there; before
   ``min_length`` the frame is lost);
2. find the tip along the last step: where the tail's contrast gives way to background;
3. fit the traced direction along the arc with a cubic (a tail bends smoothly: noise that
   turned one step is outvoted by its neighbours) and cut the visible tail, base to tip,
   into S equal segments.

The traced length therefore follows the tail: a tail bent out of the focal plane looks
shorter and is traced shorter, rather than carrying the last segment past the tip.

Angle convention: radians from the resting direction, in image axes (x right, y down), so a
positive angle turns clockwise on screen. ``angles[i]`` is the direction of segment ``i``; the
cumulative tail angle is the last segment's direction (the sum of all bends). A lost frame
has NaN angles: it is never reported as some tail it is not.
"""
from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np

from rig.camera import _kernels as K
from rig.camera._core import polarity_sign, trace_geometry

log = logging.getLogger(__name__)

FRAME_DTYPES = (np.uint8, np.uint16, np.float32)
STATUS_NAMES = {K.OK: "ok", K.LOST_CONTRAST: "no contrast", K.LOST_BEND: "implausible bend",
                K.LOST_OUTSIDE: "out of frame"}


class FrameError(ValueError):
    """A frame the tracker cannot read: wrong dimensions, size or dtype."""


class TailResult(NamedTuple):
    """One traced frame. ``angles`` and ``points`` are the tracker's buffers, overwritten by
    the next ``track`` call: copy them to keep them."""

    angles: np.ndarray  # (S,) float32 rad from the resting direction; NaN when lost
    cum_angle: float  # rad, direction of the last segment (sum of bends); NaN when lost
    lost: bool  # True when the trace is not trustworthy (treat as moving)
    status: int  # 0 ok, else a LOST_* code (STATUS_NAMES)
    points: np.ndarray  # (S + 1, 2) float64 x, y pixels, base to tip
    length: float  # visible tail length, pixels (0 when lost)


class TailTracker:
    """Trace a head-restrained larva's tail in grey frames.

    Parameters
    ----------
    base : (x, y) tail base in pixels (where the tail leaves the body).
    direction : resting direction of the tail, rad, image axes (0 = +x, pi/2 = +y, down).
    length : tail length, pixels (base to tip at rest). The trace follows the visible tail
        up to ``max_length`` times this.
    n_segments : number of segments S (8-10 usual) the visible tail is cut into.
    polarity : "dark" (dark tail on a bright background, transmitted light) or "bright".
    max_bend : largest bend over one segment's length, rad (half-width of the search fan).
    min_contrast : grey levels by which the best ray must exceed the fan's mean; below
        that the trace ends (too dark, out of focus, no fish).
    end_frac : the trace ends where the ridge stands less than this fraction of its
        strongest contrast above the fan's mean (a fraction, so halving the image's contrast
        changes nothing).
    min_length : fraction of ``length`` the trace must reach, else the frame is lost.
    max_length : the longest trace, as a multiple of ``length``.
    smooth_degree : degree of the polynomial fitted to the direction along the arc (0 =
        straight tail, 2 = curvature changing linearly along the tail). Measured: on a real
        larva under noise (sd 10 grey levels) rest frames hold within 2.7 deg with 2, but a
        cubic's free end swings the faint tip by up to 11 deg; on clean high-contrast video
        a cubic follows an S-shaped beat better (simulated camera RMS 1.1 deg against 1.7).
    background : None, or an (H, W) image of the scene without the tail, subtracted before
        tracing (for uneven illumination); see ``estimate_background``. A static image, not
        a running mean: a head-restrained tail rests most of the time and would fade into
        a running mean until it could no longer be found.
    resolution_px : spacing of candidate segment ends, pixels.
    shape : (H, W) expected frame shape; None takes the first frame's.
    """

    def __init__(self, base, direction: float, length: float, n_segments: int = 10, *,
                 polarity: str = "dark", max_bend: float = math.radians(60),
                 min_contrast: float = 3.0, end_frac: float = 0.25, min_length: float = 0.5,
                 max_length: float = 1.25, smooth_degree: int = 2,
                 background: np.ndarray | None = None, resolution_px: float = 1.0,
                 shape: tuple[int, int] | None = None):
        base = np.asarray(base, dtype=np.float64)
        if base.shape != (2,) or not np.all(np.isfinite(base)):
            raise ValueError(f"TailTracker.base: expected finite (x, y) pixels, "
                             f"got {base!r}")
        if not (isinstance(n_segments, (int, np.integer)) and 1 <= n_segments <= 64):
            raise ValueError(f"TailTracker.n_segments: expected an int in 1..64, "
                             f"got {n_segments!r}")
        if not (math.isfinite(length) and length >= 2.0 * n_segments):
            raise ValueError(f"TailTracker.length: {length!r} px is too short for {n_segments} "
                             "segments; give at least 2 px per segment (or fewer segments)")
        if not math.isfinite(direction):
            raise ValueError(f"TailTracker.direction: expected a finite angle in rad, "
                             f"got {direction!r}")
        if polarity not in ("dark", "bright"):
            raise ValueError(f"TailTracker.polarity: expected 'dark' or 'bright', "
                             f"got {polarity!r}")
        if not (0.0 < max_bend < math.pi):
            raise ValueError(f"TailTracker.max_bend: expected 0 < max_bend < pi rad, "
                             f"got {max_bend!r}")
        if not (min_contrast >= 0.0):
            raise ValueError(f"TailTracker.min_contrast: expected >= 0 grey levels, "
                             f"got {min_contrast!r}")
        if not (0.0 < end_frac < 1.0):
            raise ValueError(f"TailTracker.end_frac: expected a fraction in (0, 1), "
                             f"got {end_frac!r}")
        if not (0.0 < min_length <= 1.0 <= max_length <= 3.0):
            raise ValueError(f"TailTracker.min_length/max_length: expected 0 < min_length <= 1 "
                             f"<= max_length <= 3 (fractions of length), got {min_length!r}, "
                             f"{max_length!r}")
        if not (isinstance(smooth_degree, (int, np.integer)) and 0 <= smooth_degree <= 5):
            raise ValueError(f"TailTracker.smooth_degree: expected an int in 0..5, "
                             f"got {smooth_degree!r}")
        if not (0.05 <= resolution_px <= 5.0):
            raise ValueError(f"TailTracker.resolution_px: expected 0.05..5 px, "
                             f"got {resolution_px!r}")
        self.base = base
        self.direction = float(direction)
        self.length = float(length)
        self.n_segments = int(n_segments)
        self.polarity = polarity
        self.max_bend = float(max_bend)
        self.min_contrast = float(min_contrast)
        self.end_frac = float(end_frac)
        self.smooth_degree = int(smooth_degree)
        self.seg_len = self.length / self.n_segments  # at rest
        g = trace_geometry(self.length, self.n_segments, self.max_bend, resolution_px,
                           min_length, max_length)
        self._g = g
        self._sign = polarity_sign(polarity)
        self._profile = np.zeros(g.n_rays)
        self._trace = np.zeros((g.max_steps + 1, 2))
        self._dirs = np.zeros(g.max_steps)
        self._weight = np.zeros(g.max_steps)
        self._local_bg = np.zeros(g.max_steps)
        self._u = np.zeros(g.max_steps)  # fit scratch: arc position, direction, weight
        self._y = np.zeros(g.max_steps)
        self._w = np.zeros(g.max_steps)
        self._normal = np.zeros((self.smooth_degree + 1, self.smooth_degree + 2))
        self._coef = np.zeros(self.smooth_degree + 1)
        self.angles = np.zeros(self.n_segments, dtype=np.float32)
        self.points = np.zeros((self.n_segments + 1, 2))
        self.shape: tuple[int, int] | None = None
        self.dtype: np.dtype | None = None
        self._bg = np.zeros((1, 1), dtype=np.float32)
        self.n_frames = 0
        self.n_lost = 0
        self.status = K.OK
        self._use_bg = False
        if shape is not None:
            self._set_shape(tuple(int(v) for v in shape))
        if background is not None:
            self.set_background(background)

    @staticmethod
    def points_geometry(base, tip) -> dict:
        """``base``, ``direction`` (rad) and ``length`` (pixels) from two clicked points: tail
        base and resting tail tip, (x, y) pixels."""
        base = np.asarray(base, dtype=np.float64)
        d = np.asarray(tip, dtype=np.float64) - base
        return dict(base=base, direction=math.atan2(d[1], d[0]), length=float(np.hypot(*d)))

    @classmethod
    def from_points(cls, base, tip, n_segments: int = 10, **kwargs) -> "TailTracker":
        """A tracker from two clicked points: tail base and resting tail tip, (x, y) pixels."""
        return cls(**cls.points_geometry(base, tip), n_segments=n_segments, **kwargs)

    def _set_shape(self, shape: tuple[int, int]) -> None:
        h, w = shape
        x, y = self.base
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            # FrameError: when the first frame sets the size, the node counts it as a bad frame
            raise FrameError(f"TailTracker.base: ({x:g}, {y:g}) lies outside a {w}x{h} frame; "
                             "set the base on the fish (x < width, y < height)")
        self.shape = (h, w)

    def set_background(self, image: np.ndarray | None) -> None:
        """Subtract ``image`` (H, W) from every frame before tracing; None switches it off."""
        if image is None:
            self._use_bg = False
            self._bg = np.zeros((1, 1), dtype=np.float32)
            return
        image = np.asarray(image)
        if image.ndim != 2 or not np.all(np.isfinite(image)):
            raise ValueError(f"TailTracker.background: expected a finite (H, W) image, got shape "
                             f"{image.shape}")
        if self.shape is None:
            self._set_shape(image.shape)
        elif image.shape != self.shape:
            raise ValueError(f"TailTracker.background: shape {image.shape}, expected the frames' "
                             f"{self.shape}")
        self._bg = np.ascontiguousarray(image, dtype=np.float32)
        self._use_bg = True

    def check_frame(self, frame) -> np.ndarray:
        """Return ``frame`` as a C-contiguous 2-D array, or raise ``FrameError`` naming the fix."""
        if not isinstance(frame, np.ndarray):
            raise FrameError(f"frame: expected a numpy array, got {type(frame).__name__}")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if frame.ndim != 2:
            raise FrameError(f"frame: expected a grey (H, W) image, got shape {frame.shape}; "
                             "convert colour frames to grey in the frame source")
        if frame.dtype not in FRAME_DTYPES:
            raise FrameError(f"frame: dtype {frame.dtype}, expected uint8, uint16 or float32")
        if self.shape is None:
            self._set_shape(frame.shape)
        elif frame.shape != self.shape:
            raise FrameError(f"frame: shape {frame.shape}, expected {self.shape} (the tracker's "
                             "frame size); make a new tracker when the camera's ROI changes")
        if self.dtype is None:
            self.dtype = frame.dtype
        elif frame.dtype != self.dtype:
            raise FrameError(f"frame: dtype {frame.dtype}, expected {self.dtype} as in earlier "
                             "frames; keep one pixel format per camera run")
        return np.ascontiguousarray(frame)

    def track(self, frame: np.ndarray) -> TailResult:
        """Trace one frame.

        Parameters
        ----------
        frame : (H, W) uint8, uint16 or float32 grey image.

        Returns
        -------
        TailResult : angles (S,) rad, cum_angle rad, lost flag, status code, points (S+1, 2),
            visible length px.

        Raises
        ------
        FrameError : wrong dimensions, size or dtype, or a base outside the frame (nothing is
            updated).
        """
        frame = self.check_frame(frame)
        status, length = self._trace_kernel(frame, self._bg, self._use_bg)
        self.status = status
        self.n_frames += 1
        lost = status != K.OK
        if lost:
            self.n_lost += 1
        return TailResult(self.angles, float(self.angles[-1]), lost, status, self.points, length)

    def _trace_kernel(self, frame, bg, use_bg) -> tuple[int, float]:
        g = self._g
        return K.trace_tail(frame, bg, use_bg, self._sign, self.base[0], self.base[1],
                            self.direction, g.ray_len, g.step_len, g.n_rays, g.dtheta,
                            g.n_ray_samples, self.min_contrast, self.end_frac, g.min_steps,
                            self.smooth_degree, g.tip_spacing, self._profile, self._trace,
                            self._dirs, self._weight, self._local_bg, self._u, self._y,
                            self._w, self._normal, self._coef, self.points, self.angles)

    def warm_up(self) -> None:
        """Compile (or load cached) kernels on a blank frame so the first real frame is fast."""
        shape = self.shape or (max(4, int(self.base[1]) + 2), max(4, int(self.base[0]) + 2))
        for dt in FRAME_DTYPES:
            self._trace_kernel(np.zeros(shape, dt), np.zeros((1, 1), np.float32), False)


def _box_blur(img: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size`` x ``size`` window (edges use the part inside), via cumulative sums."""
    out = img.astype(np.float64)
    r = size // 2
    for axis in (0, 1):
        n = out.shape[axis]
        c = np.cumsum(out, axis=axis)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        hi = np.minimum(np.arange(n) + r + 1, n)
        lo = np.maximum(np.arange(n) - r, 0)
        shape = [1, 1]
        shape[axis] = n
        out = (np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)) / (hi - lo).reshape(shape)
    return out


def estimate_background(frames: np.ndarray, size: int = 31) -> np.ndarray:
    """The slow illumination field under the fish, for ``TailTracker(background=...)``.

    The median frame, box-blurred over ``size`` pixels (several tail widths): uneven
    illumination survives, while the thin tail is spread so thin that subtracting it costs
    the tracker little contrast. Computed once (or now and then), never per frame.

    Parameters
    ----------
    frames : (T, H, W) or (H, W) grey frames.
    size : blur window, pixels (odd, >= 3).

    Returns
    -------
    (H, W) float32.
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"estimate_background.frames: expected (T, H, W), got {frames.shape}")
    if not (isinstance(size, (int, np.integer)) and size >= 3):
        raise ValueError(f"estimate_background.size: expected an int >= 3 px, got {size!r}")
    return _box_blur(np.median(frames, axis=0), int(size)).astype(np.float32)
