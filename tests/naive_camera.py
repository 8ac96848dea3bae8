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


def trace_tail(img, base, theta0, seg_len, n_seg, n_rays, step, n_samples, polarity, min_contrast):
    """The tracker's algorithm, one segment at a time, all rays of a segment at once.

    Returns (angles (S,) float32 rad from theta0, points (S+1, 2), status).
    """
    h, w = img.shape
    pts = np.zeros((n_seg + 1, 2))
    pts[0] = base
    angles = np.zeros(n_seg, dtype=np.float32)
    prev = theta0
    half = 0.5 * (n_rays - 1)
    radii = seg_len * np.arange(1, n_samples + 1) / n_samples  # (R,)
    status = OK
    for s in range(n_seg):
        if status == OK:
            a = prev + (np.arange(n_rays) - half) * step  # (K,)
            xs = pts[s, 0] + radii[None, :] * np.cos(a)[:, None]  # (K, R)
            ys = pts[s, 1] + radii[None, :] * np.sin(a)[:, None]
            profile = polarity * bilinear(img, xs, ys).mean(axis=1)  # (K,)
            k = int(np.argmax(profile))
            best, mean = profile[k], profile.mean()
            if best - mean < min_contrast:
                status = LOST_CONTRAST
            elif k == 0 or k == n_rays - 1:
                status = LOST_BEND
            else:
                level = 0.5 * (best + mean)
                lo = k
                while lo > 0 and profile[lo - 1] > level:
                    lo -= 1
                hi = k
                while hi < n_rays - 1 and profile[hi + 1] > level:
                    hi += 1
                wk = profile[lo:hi + 1] - level
                prev = prev + (np.dot(wk, np.arange(lo, hi + 1)) / wk.sum() - half) * step
        pts[s + 1] = pts[s] + seg_len * np.array([math.cos(prev), math.sin(prev)])
        if status == OK and not (0 <= pts[s + 1, 0] <= w - 1 and 0 <= pts[s + 1, 1] <= h - 1):
            status = LOST_OUTSIDE
        angles[s] = (prev - theta0 + math.pi) % (2 * math.pi) - math.pi
    return angles, pts, status


def track_like(tracker, img):
    """``trace_tail`` with a ``TailTracker``'s settings (no background subtraction)."""
    return trace_tail(img, tracker.base, tracker.direction, tracker.seg_len, tracker.n_segments,
                      tracker._n_rays, tracker._step, tracker._n_samples, tracker._sign,
                      tracker.min_contrast)


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
