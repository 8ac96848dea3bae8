"""Options -> plain values for the camera kernels (the middle of the three numeric layers)."""
from __future__ import annotations

import math

import numpy as np


def fan_geometry(seg_len: float, max_bend: float, resolution_px: float) -> tuple[int, float, int]:
    """Search-fan constants for one segment.

    Parameters
    ----------
    seg_len : segment length, pixels.
    max_bend : largest bend between neighbouring segments, rad (half-width of the fan).
    resolution_px : spacing of the rays' ends, pixels; sub-step precision comes from the
        parabola through the peak.

    Returns
    -------
    n_rays : odd number of ray directions (the middle one continues the previous segment).
    step : angle between rays, rad.
    n_ray_samples : samples along each ray, about one per pixel.
    """
    step = resolution_px / seg_len
    half = max(1, int(math.ceil(max_bend / step)))
    n_ray_samples = max(2, int(round(seg_len)))
    return 2 * half + 1, step, n_ray_samples


def polarity_sign(polarity: str) -> float:
    """+1.0 for a bright tail on a dark background, -1.0 for a dark tail on a bright one."""
    return 1.0 if polarity == "bright" else -1.0


def tail_points(base, theta0: float, seg_len: float, angles: np.ndarray) -> np.ndarray:
    """Centreline points (S + 1, 2) in pixels (x, y) from segment angles (S,) rad.

    Angles are measured from the resting direction ``theta0`` (rad, image axes, y down),
    the same convention as ``TailTracker``; the simulated camera draws with it.
    """
    a = theta0 + np.asarray(angles, dtype=np.float64)
    steps = seg_len * np.stack([np.cos(a), np.sin(a)], axis=1)  # (S, 2)
    pts = np.empty((len(a) + 1, 2))
    pts[0] = base
    pts[1:] = np.asarray(base, dtype=np.float64) + np.cumsum(steps, axis=0)
    return pts
