"""Numba kernels of the streaming connectivity posterior and the adaptive design.

Kernels only compute: ``stim.posterior.StreamingPosterior`` and ``stim.design`` check shapes
and dtypes once and own every array. Nothing here allocates per stimulation except the
greedy design's small work arrays.

Storage (see ``stim.posterior`` for why):
  lam     (N, J) int16  log-odds of every candidate connection i -> post[c], in 1/Q nats
  cand    (J, C) int32  active candidates of each postsynaptic column, ncand (J,) of them
  full    (J,) bool     a candidate of this column was dropped because its list was full
  candC   (J, C) f32    the explaining-away correction (nats) currently subtracted from lam
  members (T, K) int32  stimulated neurons of each test, ksize (T,) how many
  ys      (T, J) uint8  outcome of each test for each column (0, 1, 2 = unobserved)
  nxt_t/nxt_p (T, K)    linked list through the tests that contain the same neuron
  head_t/head_p (N,)    newest (test, slot) containing each neuron, -1 when none
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

I16_MAX = 32767
I16_MIN = -32767  # -32768 marks "never a candidate" (self-connections)


@njit(cache=True)
def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def _add_candidate(cand, candC, ncand, c, i, overflow, full):
    for s in range(ncand[c]):
        if cand[c, s] == i:
            return 0
    if ncand[c] < cand.shape[1]:
        cand[c, ncand[c]] = i
        candC[c, ncand[c]] = 0.0
        ncand[c] += 1
        return 1
    overflow[0] += 1
    full[c] = True  # refresh_columns rescans the column once room is freed
    return 0


@njit(cache=True)
def absorb_test(lam, members, k, y, dq1, dq0, tau_q, t, nxt_t, nxt_p, head_t, head_p,
                cand, candC, ncand, overflow, full):
    """Fold one test into the rows it touched (the stimulated neurons' outgoing weights).

    Adds the test's counting evidence (``dq1`` for a response, ``dq0`` for silence, already
    weighted and quantised) to lam[i, :] for each stimulated i, links the test into each
    member's list, and makes (i, c) an active candidate when its log-odds crosses ``tau_q``
    upwards (the list is searched only on a crossing, so the hot loop stays a row sweep).
    The explaining-away correction of this test is left to ``refresh_columns``.
    Returns the number of new candidates.
    """
    J = lam.shape[1]
    added = 0
    for p in range(k):
        i = members[p]
        nxt_t[t, p] = head_t[i]
        nxt_p[t, p] = head_p[i]
        head_t[i] = t
        head_p[i] = p
        for c in range(J):
            yy = y[c]
            if yy == 2:
                continue
            old = np.int32(lam[i, c])
            if old == -32768:
                continue
            new = old + (dq1 if yy == 1 else dq0)
            if new > I16_MAX:
                new = I16_MAX
            elif new < I16_MIN:
                new = I16_MIN
            lam[i, c] = new
            if old <= tau_q and new > tau_q:
                added += _add_candidate(cand, candC, ncand, c, i, overflow, full)
    return added


@njit(cache=True)
def _log1m_sigmoid(x):
    """log(1 - sigmoid(x)) = -softplus(x), stable for large |x|."""
    if x > 0:
        return -x - math.log1p(math.exp(-x))
    return -math.log1p(math.exp(x))


@njit(cache=True)
def _refresh_column(c, lam, cand, candC, ncand, weight, ys, nxt_t, nxt_p,
                    head_t, head_p, c1, c0, q, tau, n_sweeps, logz, base, l1m):
    """Mean-field coordinate ascent over the active candidates of one postsynaptic column.

    For candidate i: lambda_i = B_i - sum_{t containing i} w_t c_t (1 - prod_{k in S_t, k != i}
    (1 - pi_k)), where B_i is the counting evidence (prior + sum_t w_t c_t) held in lam and
    the sum is the explaining-away correction. Inactive candidates count as pi = 0, so
    log prod_{k in S_t} (1 - pi_k) is kept per test in ``logz`` from the candidates alone and
    a sweep costs the candidates' test counts, not the ensemble size.
    """
    n = ncand[c]
    for s in range(n):
        i = cand[c, s]
        base[s] = lam[i, c] / q + candC[c, s]  # uncorrected evidence B_i
        l1m[s] = _log1m_sigmoid(base[s] - candC[c, s])
        t = head_t[i]
        p = head_p[i]
        while t >= 0:
            logz[t] += l1m[s]
            tn = nxt_t[t, p]
            p = nxt_p[t, p]
            t = tn
    for _ in range(n_sweeps):
        for s in range(n):
            i = cand[c, s]
            corr = 0.0
            t = head_t[i]
            p = head_p[i]
            while t >= 0:
                yy = ys[t, c]
                w = weight[t]
                if yy != 2 and w > 0.0:
                    corr += w * (c1 if yy == 1 else c0) * (1.0 - math.exp(logz[t] - l1m[s]))
                tn = nxt_t[t, p]
                p = nxt_p[t, p]
                t = tn
            candC[c, s] = corr
            new = _log1m_sigmoid(base[s] - corr)
            d = new - l1m[s]
            l1m[s] = new
            t = head_t[i]
            p = head_p[i]
            while t >= 0:
                logz[t] += d
                tn = nxt_t[t, p]
                p = nxt_p[t, p]
                t = tn
    keep = 0
    for s in range(n):
        i = cand[c, s]
        t = head_t[i]
        p = head_p[i]
        while t >= 0:
            logz[t] = 0.0
            tn = nxt_t[t, p]
            p = nxt_p[t, p]
            t = tn
        val = base[s] - candC[c, s]
        if val < tau and base[s] < tau:
            # leave the active set: back to the uncorrected evidence, which is below tau
            lam[i, c] = max(I16_MIN, min(I16_MAX, int(round(base[s] * q))))
            continue
        lam[i, c] = max(I16_MIN, min(I16_MAX, int(round(val * q))))
        cand[c, keep] = i
        candC[c, keep] = candC[c, s]
        keep += 1
    ncand[c] = keep


@njit(cache=True)
def _rescan_column(c, lam, cand, candC, ncand, tau_q, mark):
    """Re-admit the pairs of column ``c`` above ``tau_q`` that a full list dropped (outside
    the list lam holds the uncorrected evidence, so lam > tau_q is exactly 'should be
    active'). ``mark`` (N,) bool must be all False on entry and is left so.
    Returns (every such pair is now in the list, number added)."""
    n = ncand[c]
    for s in range(n):
        mark[cand[c, s]] = True
    complete = True
    added = 0
    for i in range(lam.shape[0]):
        if not mark[i] and lam[i, c] > tau_q:  # -32768 (self) never is
            if ncand[c] < cand.shape[1]:
                cand[c, ncand[c]] = i
                candC[c, ncand[c]] = 0.0
                ncand[c] += 1
                added += 1
            else:
                complete = False
    for s in range(n):
        mark[cand[c, s]] = False
    return complete, added


@njit(cache=True)
def refresh_columns(cols, lam, cand, candC, ncand, weight, ys, nxt_t, nxt_p,
                    head_t, head_p, c1, c0, q, tau, n_sweeps, logz, base, l1m, full, tau_q,
                    mark):
    """Run ``_refresh_column`` for each column in ``cols``; ``logz`` (T,) must be zero on entry.

    A column flagged ``full`` is rescanned after its refresh (which may have freed room) and
    the re-admitted candidates refreshed with it; the flag stays while some still do not fit.
    """
    for c in cols:
        _refresh_column(c, lam, cand, candC, ncand, weight, ys, nxt_t, nxt_p,
                        head_t, head_p, c1, c0, q, tau, n_sweeps, logz, base, l1m)
        if full[c]:
            complete, added = _rescan_column(c, lam, cand, candC, ncand, tau_q, mark)
            if added:
                _refresh_column(c, lam, cand, candC, ncand, weight, ys, nxt_t, nxt_p,
                                head_t, head_p, c1, c0, q, tau, n_sweeps, logz, base, l1m)
            full[c] = not complete


@njit(cache=True)
def count_bounds(lam_shape_n, members, ksize, weight, ys, prior, c1, c0, lo, hi):
    """Bounds on every marginal's log-odds over all mean-field fixed points.

    A test's message c_t * prod(1 - pi_k) lies in [0, c1] for a response and in [c0, 0] for
    silence, so prior + sum(negative messages) <= lambda <= prior + sum(positive messages).
    """
    J = ys.shape[1]
    for i in range(lam_shape_n):
        for c in range(J):
            lo[i, c] = prior
            hi[i, c] = prior
    for t in range(ksize.shape[0]):
        w = weight[t]
        for p in range(ksize[t]):
            i = members[t, p]
            for c in range(J):
                yy = ys[t, c]
                if yy == 1:
                    hi[i, c] += w * c1
                elif yy == 0:
                    lo[i, c] += w * c0


@njit(cache=True)
def _mi(z, alpha, beta, h_a, h_b):
    """Mutual information (nats) between outcome and OR when P(OR = 0) = z."""
    p1 = (1.0 - z) * (1.0 - beta) + z * alpha
    if p1 <= 0.0 or p1 >= 1.0:
        return 0.0
    h = -p1 * math.log(p1) - (1.0 - p1) * math.log(1.0 - p1)
    return h - z * h_a - (1.0 - z) * h_b


@njit(cache=True)
def greedy_information(lam, q, pool, cols, size, alpha, beta):
    """Greedy ensemble maximising the expected information of the next test.

    Adds, one at a time, the pool neuron that most increases sum_c I(y_c; OR_c) under the
    factorised posterior (columns ``cols`` of ``lam`` score the choice). Returns the chosen
    pool positions (size,) and the expected information (nats, summed over ``cols``).
    """
    h_a = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha)
    h_b = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
    m = pool.shape[0]
    nc = cols.shape[0]
    # (m, nc) probability that candidate is NOT a partner, read once from the int16 rows
    one_minus = np.empty((m, nc))
    for a in range(m):
        i = pool[a]
        for b in range(nc):
            v = lam[i, cols[b]]
            one_minus[a, b] = 1.0 if v == -32768 else 1.0 - _sigmoid(v / q)
    z = np.ones(nc)
    used = np.zeros(m, dtype=np.bool_)
    chosen = np.empty(size, dtype=np.int64)
    cur = 0.0
    for s in range(size):
        best = -1.0e300
        best_a = -1
        for a in range(m):
            if used[a]:
                continue
            tot = 0.0
            for b in range(nc):
                tot += _mi(z[b] * one_minus[a, b], alpha, beta, h_a, h_b)
            if tot > best:
                best = tot
                best_a = a
        used[best_a] = True
        chosen[s] = best_a
        for b in range(nc):
            z[b] *= one_minus[best_a, b]
        cur = best
    return chosen, cur
