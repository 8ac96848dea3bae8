"""numba kernels of the tail tracker and the bout detector: arrays in, arrays updated in place.

Nothing here validates or allocates; ``rig.camera.tracker`` and ``rig.camera.bouts`` own the
buffers, check shapes and dtypes once, and call these per camera frame.
"""
from __future__ import annotations

import math

from numba import njit

# Trace status codes (``TailTracker.status``); 0 is a good trace.
OK = 0
LOST_CONTRAST = 1  # no tail-like ridge in the search fan: too dark, too faint, no fish
LOST_BEND = 2  # the best direction is at the edge of the fan: an implausible bend
LOST_OUTSIDE = 3  # the traced tail left the frame


@njit(cache=True, inline="always")
def _bilinear(img, x, y):
    """Bilinear sample of ``img`` (H, W) at (x, y) pixels, clamped to the border."""
    h, w = img.shape
    if x < 0.0:
        x = 0.0
    elif x > w - 1.0:
        x = w - 1.0
    if y < 0.0:
        y = 0.0
    elif y > h - 1.0:
        y = h - 1.0
    x0 = int(x)
    y0 = int(y)
    x1 = min(x0 + 1, w - 1)
    y1 = min(y0 + 1, h - 1)
    fx = x - x0
    fy = y - y0
    top = img[y0, x0] * (1.0 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1.0 - fx) + img[y1, x1] * fx
    return top * (1.0 - fy) + bot * fy


@njit(cache=True, inline="always")
def _ridge_centre(profile, kbest, level):
    """Centroid (fractional ray index) of the profile above ``level`` around its peak.

    The ray profile of a tail wider than a ray step has a flat top; the centroid of the
    part above half height finds its middle where a parabola through the peak would follow
    the noise on the plateau.
    """
    n = profile.shape[0]
    lo = kbest
    while lo > 0 and profile[lo - 1] > level:
        lo -= 1
    hi = kbest
    while hi < n - 1 and profile[hi + 1] > level:
        hi += 1
    wsum = 0.0
    csum = 0.0
    for k in range(lo, hi + 1):
        wk = profile[k] - level
        wsum += wk
        csum += wk * k
    return csum / wsum


@njit(cache=True)
def trace_tail(img, bg, use_bg, polarity, x0, y0, theta0, seg_len, n_rays, step, n_ray_samples,
               min_contrast, profile, points, angles):
    """Trace the tail centreline segment by segment; fill ``points`` and ``angles`` in place.

    For each segment, rays of length ``seg_len`` leave the previous point at ``n_rays``
    directions spaced ``step`` rad around the previous segment's direction; the ray with
    the most tail-like mean intensity (``polarity`` * (img - bg)) is the segment, refined
    to a fraction of ``step`` by the centroid of the ridge above half height.

    Parameters
    ----------
    img : (H, W) frame, any real dtype.
    bg : (H, W) float32 background, read only when ``use_bg``.
    polarity : +1.0 for a bright tail on a dark background, -1.0 for a dark tail.
    x0, y0 : tail base, pixels.  theta0 : resting direction, rad (image axes, y down).
    seg_len : segment length, pixels.
    profile : (n_rays,) float64 scratch.
    points : (S + 1, 2) float64 output, x, y pixels.  angles : (S,) float32 output, rad
        from the resting direction.

    Returns
    -------
    status : int, OK or a LOST_* code; segments after a lost one keep the last direction.
    """
    h, w = img.shape
    n_seg = angles.shape[0]
    px = x0
    py = y0
    prev = theta0
    points[0, 0] = px
    points[0, 1] = py
    half = 0.5 * (n_rays - 1)
    status = OK
    for s in range(n_seg):
        if status == OK:
            best = -1.0e300
            kbest = 0
            mean = 0.0
            for k in range(n_rays):
                a = prev + (k - half) * step
                c = math.cos(a)
                sn = math.sin(a)
                acc = 0.0
                for r in range(1, n_ray_samples + 1):
                    rr = seg_len * r / n_ray_samples
                    xs = px + rr * c
                    ys = py + rr * sn
                    v = _bilinear(img, xs, ys)
                    if use_bg:
                        v -= _bilinear(bg, xs, ys)
                    acc += v
                val = polarity * acc / n_ray_samples
                profile[k] = val
                mean += val
                if val > best:
                    best = val
                    kbest = k
            mean /= n_rays
            if best - mean < min_contrast:
                status = LOST_CONTRAST
            elif kbest == 0 or kbest == n_rays - 1:
                status = LOST_BEND
            else:
                prev = prev + (_ridge_centre(profile, kbest, 0.5 * (best + mean)) - half) * step
        px = px + seg_len * math.cos(prev)
        py = py + seg_len * math.sin(prev)
        if status == OK and (px < 0.0 or py < 0.0 or px > w - 1.0 or py > h - 1.0):
            status = LOST_OUTSIDE
        points[s + 1, 0] = px
        points[s + 1, 1] = py
        d = prev - theta0
        # wrap to [-pi, pi): a tail never turns a full circle within one trace
        d = d - 2.0 * math.pi * math.floor((d + math.pi) / (2.0 * math.pi))
        angles[s] = d
    return status


# Bout detector state vector layout (float64), one slot per field.
S_SUM, S_SUMSQ, S_POS, S_COUNT, S_IN_BOUT, S_START, S_PEAK, S_N, S_LAST = range(9)
N_STATE = 9


@njit(cache=True)
def bout_step(ring, state, x, on, off):
    """Fold one cumulative angle ``x`` (rad) into the rolling window; update bout state.

    Vigour is the standard deviation of the last ``len(ring)`` values (fewer at start).
    A bout starts when vigour rises above ``on`` and ends when it falls below ``off``
    (``off`` < ``on``: hysteresis). ``state[S_PEAK]`` holds the signed angle of largest
    magnitude in the current bout.

    Returns
    -------
    event : int, +1 when a bout starts on this sample, -1 when one ends, else 0.
    vigour : float, rad.
    """
    n = ring.shape[0]
    pos = int(state[S_POS])
    count = int(state[S_COUNT])
    if count == n:
        old = ring[pos]
        state[S_SUM] -= old
        state[S_SUMSQ] -= old * old
    else:
        count += 1
    ring[pos] = x
    state[S_SUM] += x
    state[S_SUMSQ] += x * x
    pos += 1
    if pos == n:
        pos = 0
        # re-sum once per window so rounding in the running sums never accumulates
        s1 = 0.0
        s2 = 0.0
        for i in range(count):
            s1 += ring[i]
            s2 += ring[i] * ring[i]
        state[S_SUM] = s1
        state[S_SUMSQ] = s2
    state[S_POS] = pos
    state[S_COUNT] = count
    m = state[S_SUM] / count
    var = state[S_SUMSQ] / count - m * m
    vigour = math.sqrt(var) if var > 0.0 else 0.0
    event = 0
    idx = state[S_N]
    if state[S_IN_BOUT] == 0.0:
        if vigour > on:
            state[S_IN_BOUT] = 1.0
            state[S_START] = idx
            state[S_PEAK] = x
            event = 1
    else:
        if abs(x) > abs(state[S_PEAK]):
            state[S_PEAK] = x
        if vigour < off:
            state[S_IN_BOUT] = 0.0
            event = -1
    state[S_N] = idx + 1.0
    state[S_LAST] = x
    return event, vigour


@njit(cache=True)
def bout_run(xs, ring, state, on, off, events, vigour):
    """Run ``bout_step`` over a whole trace ``xs`` (T,); fill ``events`` and ``vigour``."""
    for t in range(xs.shape[0]):
        e, v = bout_step(ring, state, xs[t], on, off)
        events[t] = e
        vigour[t] = v
