"""Options -> plain values for the camera kernels (the middle of the three numeric layers)."""
from __future__ import annotations

import math
from typing import NamedTuple


class TraceGeometry(NamedTuple):
    """Plain values for ``_kernels.trace_tail``; see ``trace_geometry``."""

    ray_len: float  # px: each step's direction is judged over one rest segment's length
    step_len: float  # px: the trace advances half a ray per step
    n_rays: int  # odd: the middle ray continues the last direction
    dtheta: float  # rad between rays
    n_ray_samples: int  # samples along a ray, about one per pixel
    max_steps: int
    min_steps: int  # fewer and the frame is lost
    tip_spacing: float  # px between samples when looking for the tip


def trace_geometry(length: float, n_segments: int, max_bend: float, resolution_px: float,
                   min_length: float, max_length: float) -> TraceGeometry:
    """Search constants for a tail of ``length`` px cut into ``n_segments``.

    Parameters
    ----------
    max_bend : half-width of the fan, rad.
    resolution_px : spacing of the rays' ends, pixels; sub-ray precision comes from the
        centroid of the ridge.
    min_length, max_length : shortest and longest trace, fractions of ``length``.
    """
    ray_len = length / n_segments
    step_len = 0.5 * ray_len
    dtheta = resolution_px / ray_len
    half = max(1, int(math.ceil(max_bend / dtheta)))
    return TraceGeometry(ray_len, step_len, 2 * half + 1, dtheta, max(2, int(round(ray_len))),
                         int(math.ceil(max_length * length / step_len)),
                         max(1, int(math.floor(min_length * length / step_len))), 0.5)


def polarity_sign(polarity: str) -> float:
    """+1.0 for a bright tail on a dark background, -1.0 for a dark tail on a bright one."""
    return 1.0 if polarity == "bright" else -1.0
