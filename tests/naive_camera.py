"""Plain NumPy versions of the camera kernels: slow, obvious, the reference for tests and the
baseline of ``benchmarks/camera.py``."""
from __future__ import annotations

import math

import numpy as np

OK, LOST_CONTRAST, LOST_BEND, LOST_OUTSIDE = 0, 1, 2, 3


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of img (H, W) at arrays x, y (pixels), clamped to the border."""
    h, w = img.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = x.astype(np.int64)
    y0 = y.astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = x - x0
    fy = y - y0
    img = img.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def _tailness(img, x, y, polarity):
    return polarity * bilinear(img, x, y)


def trace_tail(img, base, theta0, g, n_seg, polarity, min_contrast, end_frac, degree):
    """The tracker's algorithm in plain NumPy: follow the ridge in half-segment steps (all
    rays of a step at once) until it fades, find the tip by a change point, cut the trace
    into ``n_seg`` equal pieces, fit the direction along the arc with ``np.polyfit``.

    ``g`` is the tracker's ``TraceGeometry``. Returns (angles (S,) float32 rad from theta0,
    NaN when lost; points (S + 1, 2); status; visible length px).
    """
    h, w = img.shape
    half = 0.5 * (g.n_rays - 1)
    radii = g.ray_len * np.arange(1, g.n_ray_samples + 1) / g.n_ray_samples  # (R,)
    trace, dirs, weight, local_bg = [np.asarray(base, float)], [], [], []
    prev, strongest, end = theta0, 0.0, OK
    for _ in range(g.max_steps):
        p = trace[-1]
        a = prev + (np.arange(g.n_rays) - half) * g.dtheta  # (K,)
        xs = p[0] + radii[None, :] * np.cos(a)[:, None]  # (K, R)
        ys = p[1] + radii[None, :] * np.sin(a)[:, None]
        profile = _tailness(img, xs, ys, polarity).mean(axis=1)  # (K,)
        k = int(np.argmax(profile))
        best, mean = profile[k], profile.mean()
        if best - mean < min_contrast or best - mean < end_frac * strongest:
            end = LOST_CONTRAST
            break
        if k == 0 or k == g.n_rays - 1:
            end = LOST_BEND
            break
        level = 0.5 * (best + mean)
        lo = k
        while lo > 0 and profile[lo - 1] > level:
            lo -= 1
        hi = k
        while hi < g.n_rays - 1 and profile[hi + 1] > level:
            hi += 1
        wk = profile[lo:hi + 1] - level
        d = prev + (np.dot(wk, np.arange(lo, hi + 1)) / wk.sum() - half) * g.dtheta
        q = p + g.step_len * np.array([math.cos(d), math.sin(d)])
        if not (0 <= q[0] <= w - 1 and 0 <= q[1] <= h - 1):
            end = LOST_OUTSIDE
            break
        strongest = max(strongest, best - mean)
        trace.append(q)
        dirs.append(d)
        weight.append(best - mean)
        local_bg.append(mean)
        prev = d
    n = len(dirs)
    if n < g.min_steps:
        idx = np.minimum(np.arange(n_seg + 1), n)
        return np.full(n_seg, np.nan, np.float32), np.array(trace)[idx], end, 0.0
    # the tip: change point of tailness along the last step and one ray beyond
    k = n - 1
    u = np.array([math.cos(dirs[k]), math.sin(dirs[k])])
    r = g.tip_spacing * np.arange(1, int((g.step_len + g.ray_len) / g.tip_spacing) + 1)
    along = trace[k][None, :] + r[:, None] * u[None, :]
    t = _tailness(img, along[:, 0], along[:, 1], polarity) - local_bg[k] - 0.5 * weight[k]
    run = np.cumsum(t)
    tip = k * g.step_len + (r[int(np.argmax(run))] if run.max() > 0 else 0.0)
    # points every tip / S px of arc along the trace
    arc = tip * np.arange(n_seg + 1) / n_seg
    j = np.minimum((arc / g.step_len).astype(int), k)
    d = np.array(dirs)[j]
    points = np.array(trace)[j] + (arc - j * g.step_len)[:, None] * np.stack(
        [np.cos(d), np.sin(d)], axis=1)
    # the direction along the arc, smoothed by a weighted polynomial
    s = np.minimum(np.arange(n) * g.step_len + 0.5 * g.ray_len, tip) / tip - 0.5
    coef = np.polyfit(s, np.array(dirs) - theta0, min(degree, n - 1), w=np.array(weight))
    angles = np.polyval(coef, (np.arange(n_seg) + 0.5) / n_seg - 0.5)
    angles = (angles + math.pi) % (2 * math.pi) - math.pi
    return angles.astype(np.float32), points, OK, tip


def track_like(tracker, img):
    """``trace_tail`` with a ``TailTracker``'s settings (no background subtraction)."""
    return trace_tail(img, tracker.base, tracker.direction, tracker._g, tracker.n_segments,
                      tracker._sign, tracker.min_contrast, tracker.end_frac,
                      tracker.smooth_degree)


def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Std of the last ``n`` values (fewer at the start), by brute force."""
    return np.array([np.std(x[max(0, t - n + 1):t + 1]) for t in range(len(x))])


def bouts_from_vigour(vigour: np.ndarray, on: float, off: float) -> list[tuple[int, int]]:
    """(start, end) frames of hysteresis crossings; a bout open at the end closes there."""
    out, start = [], None
    for t, v in enumerate(vigour):
        if start is None and v > on:
            start = t
        elif start is not None and v < off:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, len(vigour)))
    return out
