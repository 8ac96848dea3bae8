"""Options -> plain values for the camera kernels (the middle of the three numeric layers)."""
from __future__ import annotations

import math


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
