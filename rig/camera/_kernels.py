"""numba kernels of the tail tracker and the bout detector: arrays in, arrays updated in place.

Nothing here validates or allocates; ``rig.camera.tracker`` and ``rig.camera.bouts`` own the
buffers, check shapes and dtypes once, and call these per camera frame.
"""
from __future__ import annotations

import math

from numba import njit

# Trace status codes (``TailTracker.status``); 0 is a good trace.
OK = 0
# A LOST_* reason ends a trace; before the minimum length the frame is lost, after it the
# visible tail simply ended there.
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


@njit(cache=True, inline="always")
def _tailness(img, bg, use_bg, polarity, x, y):
    """``polarity`` * (img - bg) at (x, y): larger where the pixel looks more like tail."""
    v = _bilinear(img, x, y)
    if use_bg:
        v -= _bilinear(bg, x, y)
    return polarity * v


@njit(cache=True)
def _fan(img, bg, use_bg, polarity, px, py, centre, ray_len, n_rays, dtheta, n_ray_samples,
         profile):
    """Mean tailness along ``n_rays`` rays of ``ray_len`` px from (px, py), spaced ``dtheta``
    rad around ``centre``; fills ``profile`` and returns (index of the best ray, fan mean)."""
    half = 0.5 * (n_rays - 1)
    best = -1.0e300
    kbest = 0
    mean = 0.0
    for k in range(n_rays):
        a = centre + (k - half) * dtheta
        c = math.cos(a)
        sn = math.sin(a)
        acc = 0.0
        for r in range(1, n_ray_samples + 1):
            rr = ray_len * r / n_ray_samples
            acc += _tailness(img, bg, use_bg, polarity, px + rr * c, py + rr * sn)
        val = acc / n_ray_samples
        profile[k] = val
        mean += val
        if val > best:
            best = val
            kbest = k
    return kbest, mean / n_rays


@njit(cache=True)
def follow_ridge(img, bg, use_bg, polarity, x0, y0, theta0, ray_len, step_len, n_rays, dtheta,
                 n_ray_samples, min_contrast, end_frac, min_steps, profile, trace, dirs, weight,
                 local_bg):
    """Follow the tail's ridge from the base in steps of ``step_len`` px until it ends.

    At each step, rays of ``ray_len`` px (longer than a step: each direction is judged on
    more tail, so noise moves it less) leave the current point within a fan around the last
    direction; the most tail-like ray, refined by the centroid of the ridge above half
    height, sets the direction, and the trace advances ``step_len`` along it. The trace ends
    (the visible tail ends) at the first step whose ridge stands less than ``end_frac`` of
    the strongest ridge so far (and ``min_contrast``) above the fan's mean, whose best ray
    is at the fan's edge, or that would leave the frame.

    Parameters
    ----------
    trace : (M + 1, 2) float64 out, x, y pixels of the points reached (M = max steps).
    dirs : (M,) float64 out, direction of each step, rad (image axes, unwrapped).
    weight : (M,) float64 out, ridge contrast of each step (tailness units).
    local_bg : (M,) float64 out, the fan's mean tailness at each step (the local background).

    Returns
    -------
    status : OK, or a LOST_* code when the trace ended before ``min_steps`` steps.
    n : steps taken.
    """
    h, w = img.shape
    max_steps = dirs.shape[0]
    px = x0
    py = y0
    prev = theta0
    trace[0, 0] = px
    trace[0, 1] = py
    strongest = 0.0
    half = 0.5 * (n_rays - 1)
    end = OK
    n = 0
    for s in range(max_steps):
        kbest, mean = _fan(img, bg, use_bg, polarity, px, py, prev, ray_len, n_rays, dtheta,
                           n_ray_samples, profile)
        best = profile[kbest]
        contrast = best - mean
        if contrast <= 0.0 or contrast < min_contrast or contrast < end_frac * strongest:
            end = LOST_CONTRAST
            break
        if kbest == 0 or kbest == n_rays - 1:
            end = LOST_BEND
            break
        d = prev + (_ridge_centre(profile, kbest, 0.5 * (best + mean)) - half) * dtheta
        nx = px + step_len * math.cos(d)
        ny = py + step_len * math.sin(d)
        if nx < 0.0 or ny < 0.0 or nx > w - 1.0 or ny > h - 1.0:
            end = LOST_OUTSIDE
            break
        strongest = max(strongest, contrast)
        dirs[s] = d
        weight[s] = contrast
        local_bg[s] = mean
        px = nx
        py = ny
        prev = d
        trace[s + 1, 0] = px
        trace[s + 1, 1] = py
        n = s + 1
    return (end if n < min_steps else OK), n


@njit(cache=True)
def find_tip(img, bg, use_bg, polarity, trace, dirs, weight, local_bg, n, ray_len, step_len,
             spacing):
    """Arc length (px) of the tail's tip along the trace's last step and beyond.

    The tip lies between the second-last point and one ray beyond the last (the last ray
    may have reached past the tip and still passed). Along that path, sampled every
    ``spacing`` px, tailness above the local background is compared with half the last
    step's ridge contrast; the tip is where the running sum of the difference peaks
    (a change point: it weighs every sample, so one noisy pixel cannot move it far).

    Returns
    -------
    tip : arc length from the base, px (between (n - 1) * step_len and n * step_len + ray_len).
    """
    k = n - 1
    level = 0.5 * weight[k]
    bgl = local_bg[k]
    c = math.cos(dirs[k])
    sn = math.sin(dirs[k])
    total = step_len + ray_len
    m = int(total / spacing)
    run = 0.0
    best = 0.0
    tip = 0.0
    for i in range(1, m + 1):
        r = i * spacing
        x = trace[k, 0] + r * c
        y = trace[k, 1] + r * sn
        run += _tailness(img, bg, use_bg, polarity, x, y) - bgl - level
        if run > best:
            best = run
            tip = r
    return k * step_len + tip


@njit(cache=True)
def _polyfit(u, y, w, n, p, normal, coef):
    """Weighted least-squares polynomial with ``p`` coefficients (constant first) through
    (u, y)[:n] into ``coef``: normal equations, Gaussian elimination with partial pivoting.

    A whisker of ridge (1e-9 of the total weight) on the non-constant terms keeps the system
    solvable when the points crowd together (a very short trace), without moving any fit
    measurably."""
    wsum = 0.0
    for k in range(n):
        wsum += w[k]
    for i in range(p):
        for j in range(p + 1):
            normal[i, j] = 0.0
        if i > 0:
            normal[i, i] = 1e-9 * wsum
    for k in range(n):
        ui = 1.0
        for i in range(p):
            uj = ui
            for j in range(p):
                normal[i, j] += w[k] * uj
                uj *= u[k]
            normal[i, p] += w[k] * ui * y[k]
            ui *= u[k]
    for i in range(p):
        piv = i
        for r in range(i + 1, p):
            if abs(normal[r, i]) > abs(normal[piv, i]):
                piv = r
        if piv != i:
            for j in range(p + 1):
                t = normal[i, j]
                normal[i, j] = normal[piv, j]
                normal[piv, j] = t
        for r in range(i + 1, p):
            f = normal[r, i] / normal[i, i]
            for j in range(i, p + 1):
                normal[r, j] -= f * normal[i, j]
    for i in range(p - 1, -1, -1):
        acc = normal[i, p]
        for j in range(i + 1, p):
            acc -= normal[i, j] * coef[j]
        coef[i] = acc / normal[i, i]


@njit(cache=True)
def fit_angles(dirs, weight, n, ray_len, step_len, tip, theta0, degree, u, y, w, normal, coef,
               angles):
    """Segment angles: the traced direction, smoothed along the arc.

    The direction of the trace as a function of arc length is fitted by a polynomial of
    ``degree`` (at most n - 1), by least squares weighted by each step's ridge contrast
    squared: a tail bends smoothly, so noise that turned one step is outvoted by the others,
    and the faint tip, whose steps noise turns most, counts least. The visible tail, base to
    ``tip`` (px of arc), is cut into S = len(angles) equal segments whose directions are the
    fit at their middles.

    Parameters
    ----------
    u, y, w : (M,) float64 scratch.  normal : (D + 1, D + 2) float64 scratch.
    coef : (D + 1,) float64 scratch.  angles : (S,) float32 out, rad from theta0.
    """
    for k in range(n):
        # a step's direction is judged over its ray: it belongs to the ray's middle
        u[k] = min(k * step_len + 0.5 * ray_len, tip) / tip - 0.5
        y[k] = dirs[k] - theta0
        w[k] = weight[k] * weight[k]
    p = min(degree, n - 1) + 1
    _polyfit(u, y, w, n, p, normal, coef)
    n_seg = angles.shape[0]
    for s in range(n_seg):
        uu = (s + 0.5) / n_seg - 0.5
        a = 0.0
        for i in range(p - 1, -1, -1):
            a = a * uu + coef[i]
        # wrap to [-pi, pi): a tail never turns a full circle within one trace
        angles[s] = a - 2.0 * math.pi * math.floor((a + math.pi) / (2.0 * math.pi))


@njit(cache=True)
def cut_trace(trace, dirs, n, step_len, tip, points):
    """Points (S + 1, 2) every ``tip`` / S px of arc along the trace, base to tip.

    The path is the traced points up to the last step's start, then straight along the last
    step's direction to the tip (which may lie short of the last point, or beyond it).
    """
    n_seg = points.shape[0] - 1
    for s in range(n_seg + 1):
        r = tip * s / n_seg
        j = min(int(r / step_len), n - 1)  # the step this arc length falls in (or the last)
        f = r - j * step_len
        points[s, 0] = trace[j, 0] + f * math.cos(dirs[j])
        points[s, 1] = trace[j, 1] + f * math.sin(dirs[j])


@njit(cache=True)
def trace_tail(img, bg, use_bg, polarity, x0, y0, theta0, ray_len, step_len, n_rays, dtheta,
               n_ray_samples, min_contrast, end_frac, min_steps, degree, tip_spacing, profile,
               trace, dirs, weight, local_bg, u, y, w, normal, coef, points, angles):
    """One frame: ``follow_ridge``, ``find_tip``, ``cut_trace`` (points), ``fit_angles``.

    Returns
    -------
    status : OK or a LOST_* code; when lost, ``angles`` are NaN and ``points`` hold the part
        traced before the trace failed (the rest collapsed onto its end), never a guess.
    length : visible tail length, px (0 when lost).
    """
    status, n = follow_ridge(img, bg, use_bg, polarity, x0, y0, theta0, ray_len, step_len,
                             n_rays, dtheta, n_ray_samples, min_contrast, end_frac, min_steps,
                             profile, trace, dirs, weight, local_bg)
    if status != OK:
        n_seg = angles.shape[0]
        for s in range(n_seg + 1):
            j = min(s, n)
            points[s, 0] = trace[j, 0]
            points[s, 1] = trace[j, 1]
        for s in range(n_seg):
            angles[s] = math.nan
        return status, 0.0
    tip = find_tip(img, bg, use_bg, polarity, trace, dirs, weight, local_bg, n, ray_len,
                   step_len, tip_spacing)
    cut_trace(trace, dirs, n, step_len, tip, points)
    fit_angles(dirs, weight, n, ray_len, step_len, tip, theta0, degree, u, y, w, normal, coef,
               angles)
    return OK, tip


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
