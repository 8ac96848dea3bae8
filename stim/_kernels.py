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
  ycol    (J, T) uint8  outcome of each test for each column (0, 1, 2 = unobserved)
  tests_of (N, W) int32 the tests (weighted > 0) that stimulated each neuron, in order,
                        n_tests_of (N,) of them
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

I16_MAX = 32767
I16_MIN = -32767  # -32768 marks "never a candidate" (self-connections)
PREFETCH = 16  # columns whose memory refresh_columns requests at once (fits in L2)


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Ask the CPU to start loading arr[i, j] (2-D) into cache and carry on (llvm.prefetch):
    a column refresh reads scattered rows, and misses started together overlap."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:])]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        # read, keep in every cache level, data
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(arr, i, j), codegen


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
def _mark_dirty(c, dirty, queue, qs):
    """Append column ``c`` to the ring ``queue`` of columns awaiting a refresh, once."""
    if not dirty[c]:
        dirty[c] = True
        queue[(qs[0] + qs[1]) % queue.shape[0]] = c
        qs[1] += 1


@njit(cache=True)
def due_columns(queue, qs, dirty, budget, sweep_at, n_sweep, out):
    """Columns to refresh after a test, into ``out`` (2 J,): up to ``budget`` of the oldest
    queued, then the round-robin share ``sweep_at``, ``sweep_at`` + 1, ... (``n_sweep``
    of them, modulo J). Returns how many in all."""
    m = min(budget, qs[1])
    for r in range(m):
        c = queue[qs[0]]
        qs[0] = (qs[0] + 1) % queue.shape[0]
        dirty[c] = False
        out[r] = c
    qs[1] -= m
    J = dirty.shape[0]
    for r in range(n_sweep):
        out[m + r] = (sweep_at + r) % J
    return m + n_sweep


@njit(cache=True)
def distinct_ids(ids, n, mark):
    """Whether ``ids`` are distinct and in [0, n); ``mark`` (n,) bool all False, left so."""
    k = ids.shape[0]
    marked = 0
    while marked < k and 0 <= ids[marked] < n and not mark[ids[marked]]:
        mark[ids[marked]] = True
        marked += 1
    for p in range(marked):
        mark[ids[p]] = False
    return marked == k


@njit(cache=True)
def record_test(members, y, col_of, t, weight, yrow, ycol, n_obs, n_pos):
    """Store a test's outcomes, or return False and change nothing if one is not 0, 1 or 2.

    ``yrow`` (J,) uint8 and column ``t`` of ``ycol`` get ``y`` with the stimulated neurons'
    own columns (``col_of``, -1: none) unobserved; ``n_obs`` and ``n_pos`` add ``weight``
    where a column was observed and where it responded.
    """
    J = y.shape[0]
    for c in range(J):
        if y[c] < 0 or y[c] > 2:
            return False
    for c in range(J):
        yrow[c] = y[c]
    for p in range(members.shape[0]):
        if col_of[members[p]] >= 0:
            yrow[col_of[members[p]]] = 2
    for c in range(J):
        ycol[c, t] = yrow[c]
    if weight > 0:
        for c in range(J):
            if yrow[c] != 2:
                n_obs[c] += weight
            if yrow[c] == 1:
                n_pos[c] += weight
    return True


@njit(cache=True)
def absorb_test(lam, members, k, y, dq1, dq0, tau_q, t, tests_of, n_tests_of, cand, candC,
                ncand, overflow, full, dirty, queue, qs, seen, delta, old_row, responded):
    """Fold one test into the rows it touched (the stimulated neurons' outgoing weights).

    Adds the test's counting evidence (``dq1`` > 0 for a response, ``dq0`` < 0 for silence,
    already weighted and quantised) to lam[i, :] for each stimulated i, links the test into
    each member's list, and makes (i, c) an active candidate when its log-odds crosses
    ``tau_q`` upwards. The explaining-away correction is left to ``refresh_columns``: a
    column is queued for it (``dirty``, ``queue``, ``qs`` = [head, count]) when it responded
    and the test holds two of its candidates, one a likely partner (pi > 0.5): there a
    response is explained away at once. Smaller corrections wait for the posterior's
    round-robin sweep: a lone candidate's correction for this test is exactly 0 (inactive
    members count as pi = 0), a silent test's is at most |c0| times the others' summed pi,
    and a weak candidate explains little away.

    Both happen only where the test responded (only a response raises a log-odds), so the
    bookkeeping visits those few columns and the rest of each row is one vectorised sweep.
    ``seen`` (J,) holds 2 t (+1 if a likely partner was among them) for the last test t
    that met a candidate of each column; ``delta`` (J,) int32, ``old_row`` (J,) int16 and
    ``responded`` (J,) int32 are scratch. Returns the number of new candidates.
    """
    J = lam.shape[1]
    added = 0
    n_resp = 0
    for c in range(J):
        delta[c] = dq1 if y[c] == 1 else (dq0 if y[c] == 0 else 0)
    for c in range(J):
        if y[c] == 1:
            responded[n_resp] = c
            n_resp += 1
    for p in range(k):
        i = members[p]
        tests_of[i, n_tests_of[i]] = t
        n_tests_of[i] += 1
        row = lam[i]
        for c in range(J):  # branch-free, so it vectorises: the whole per-test cost
            o = np.int32(row[c])
            old_row[c] = row[c]
            v = min(max(o + delta[c], I16_MIN), I16_MAX)
            row[c] = o if o == -32768 else v
        for r in range(n_resp):
            c = responded[r]
            old = np.int32(old_row[c])
            if row[c] <= tau_q and old <= tau_q:  # -32768 (self) never passes
                continue
            if old <= tau_q:
                added += _add_candidate(cand, candC, ncand, c, i, overflow, full)
            strong = 1 if old > 0 else 0  # pi > 0.5: a likely partner
            prev = seen[c]
            if prev >= 2 * t:  # another candidate of c is in this test
                if prev & 1 or strong:
                    _mark_dirty(c, dirty, queue, qs)
                seen[c] = max(prev, 2 * t + strong)
            else:
                seen[c] = 2 * t + strong
    return added


@njit(cache=True)
def _log1m_sigmoid(x):
    """log(1 - sigmoid(x)) = -softplus(x), stable for large |x|."""
    if x > 0:
        return -x - math.log1p(math.exp(-x))
    return -math.log1p(math.exp(x))


@njit(cache=True)
def _bp_sweeps(c, n, candC, base, start, lt, lc, lm, ll, logz, c1, c0, n_sweeps):
    """Loopy belief propagation over the candidates of one column: each observed test is a
    noisy-OR factor (Sejdinovic & Johnson 2010, arXiv 1010.2441); non-candidates count as
    pi = 0.

    Test t's message to member i, from z = P(no other member drives the column) under the
    others' cavity marginals, is w log[p(y | OR=1) / (z p(y | OR=0) + (1 - z) p(y | OR=1))]
    = -w log1p(z (exp(-c_y) - 1)): the counting term w c_y at z = 1, so the correction is
    sum_e (w c_y - message), the message kept in ``lm[e]``. Edge e's cavity log-odds
    excludes its own message; ``ll[e]`` holds log(1 - sigmoid(cavity)) and ``logz[t]`` their
    sum over the test's candidates. On entry both hold the full marginals (the mean-field
    start). Unlike mean field, a member's own outcome does not count in the evidence that it
    explains the test: at a 70% miss rate the marginals' squared error is 4-10% lower, with
    fewer false pairs (tests/test_stim_bp.py).
    """
    r1 = math.exp(-c1) - 1.0
    r0 = math.exp(-c0) - 1.0
    for _ in range(n_sweeps):
        for s in range(n):
            corr = 0.0
            for e in range(start[s], start[s + 1]):
                z = math.exp(min(0.0, logz[lt[e]] - ll[e]))
                if lc[e] > 0:
                    lm[e] = -(lc[e] / c1) * math.log1p(z * r1)
                else:
                    lm[e] = -(lc[e] / c0) * math.log1p(z * r0)
                corr += lc[e] - lm[e]
            candC[c, s] = corr
            for e in range(start[s], start[s + 1]):
                new = _log1m_sigmoid(base[s] - corr - lm[e])
                logz[lt[e]] += new - ll[e]
                ll[e] = new


@njit(cache=True)
def _refresh_column(c, lam, cand, candC, ncand, weight, ycol, tests_of, n_tests_of, c1, c0, q, tau, n_sweeps, logz, base, l1m, start, lt, lc, lm, ll, loopy):
    """Mean-field coordinate ascent over the active candidates of one postsynaptic column.

    For candidate i: lambda_i = B_i - sum_{t containing i} w_t c_t (1 - prod_{k in S_t, k != i}
    (1 - pi_k)), where B_i is the counting evidence (prior + sum_t w_t c_t) held in lam and
    the sum is the explaining-away correction. Inactive candidates count as pi = 0, so
    log prod_{k in S_t} (1 - pi_k) is kept per test in ``logz`` from the candidates alone and
    a sweep costs the candidates' test counts, not the ensemble size.

    Each candidate's observed tests are gathered once into ``lt`` (test ids) and ``lc``
    (w_t c_t), from ``start[s]`` on, so the sweeps read contiguous memory. Returns 0, or
    the scratch length needed when ``lt`` is too short (nothing is changed then).
    ``loopy``: loopy belief propagation (``_bp_sweeps``) instead of mean field, from the
    same start, with ``lm`` and ``ll`` (as long as ``lt``) holding its per-test messages.
    """
    n = ncand[c]
    L = 0
    for s in range(n):
        start[s] = L
        i = cand[c, s]
        for r in range(n_tests_of[i]):
            t = tests_of[i, r]
            yy = ycol[c, t]
            if yy != 2:
                if L < lt.shape[0]:
                    lt[L] = t
                    lc[L] = weight[t] * (c1 if yy == 1 else c0)
                L += 1
    start[n] = L
    if L > lt.shape[0]:
        return L
    for s in range(n):
        i = cand[c, s]
        base[s] = lam[i, c] / q + candC[c, s]  # uncorrected evidence B_i
        l1m[s] = _log1m_sigmoid(base[s] - candC[c, s])
        for e in range(start[s], start[s + 1]):
            logz[lt[e]] += l1m[s]
    if loopy:
        for s in range(n):
            for e in range(start[s], start[s + 1]):
                ll[e] = l1m[s]
        _bp_sweeps(c, n, candC, base, start, lt, lc, lm, ll, logz, c1, c0, n_sweeps)
    for _ in range(0 if loopy else n_sweeps):
        for s in range(n):
            corr = 0.0
            for e in range(start[s], start[s + 1]):
                corr += lc[e] * (1.0 - math.exp(logz[lt[e]] - l1m[s]))
            candC[c, s] = corr
            new = _log1m_sigmoid(base[s] - corr)
            d = new - l1m[s]
            l1m[s] = new
            for e in range(start[s], start[s + 1]):
                logz[lt[e]] += d
    for e in range(L):
        logz[lt[e]] = 0.0
    keep = 0
    for s in range(n):
        i = cand[c, s]
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
    return 0


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
def _prefetch_columns(cols, lam, cand, ncand, ycol, tests_of, n_tests_of):
    """Start loading what refreshing ``cols`` reads: the candidates' log-odds and test
    lists, then the columns' outcomes of those tests (they need the lists, so come second).
    One miss at a time, these cost more than the refresh's arithmetic."""
    for c in cols:
        for s in range(ncand[c]):
            i = cand[c, s]
            _prefetch(lam, i, c)
            _prefetch(tests_of, i, 0)
    for c in cols:
        for s in range(ncand[c]):
            i = cand[c, s]
            for r in range(n_tests_of[i]):
                _prefetch(ycol, c, tests_of[i, r])


@njit(cache=True)
def refresh_columns(cols, lam, cand, candC, ncand, weight, ycol, tests_of, n_tests_of, c1, c0, q, tau, n_sweeps, logz, base, l1m, start, full, tau_q, mark, loopy=False):
    """Run ``_refresh_column`` for each column in ``cols``; ``logz`` (T,) must be zero on entry.

    A column flagged ``full`` is rescanned after its refresh (which may have freed room) and
    the re-admitted candidates refreshed with it; the flag stays while some still do not fit.
    ``loopy``: loopy belief propagation instead of mean-field sweeps (``_bp_sweeps``).
    """
    lt = np.empty(4096, dtype=np.int32)  # gathered tests: grows to the busiest column
    lc = np.empty(4096, dtype=np.float64)
    lm = np.empty(4096 if loopy else 0, dtype=np.float64)  # BP's per-test messages
    ll = np.empty(4096 if loopy else 0, dtype=np.float64)
    for a in range(cols.shape[0]):
        if a % PREFETCH == 0:
            _prefetch_columns(cols[a: a + PREFETCH], lam, cand, ncand, ycol, tests_of,
                              n_tests_of)
        c = cols[a]
        for rep in range(2):
            if rep and not full[c]:
                break
            if rep:
                complete, added = _rescan_column(c, lam, cand, candC, ncand, tau_q, mark)
                full[c] = not complete
                if not added:
                    break
            need = _refresh_column(c, lam, cand, candC, ncand, weight, ycol, tests_of,
                                   n_tests_of, c1, c0, q, tau, n_sweeps, logz, base, l1m,
                                   start, lt, lc, lm, ll, loopy)
            if need:
                lt = np.empty(2 * need, dtype=np.int32)
                lc = np.empty(2 * need, dtype=np.float64)
                lm = np.empty(2 * need if loopy else 0, dtype=np.float64)
                ll = np.empty(2 * need if loopy else 0, dtype=np.float64)
                _refresh_column(c, lam, cand, candC, ncand, weight, ycol, tests_of,
                                n_tests_of, c1, c0, q, tau, n_sweeps, logz, base, l1m,
                                start, lt, lc, lm, ll, loopy)


@njit(cache=True)
def count_bounds(lam_shape_n, members, ksize, weight, ys, prior, c1, c0, lo, hi):
    """Bounds on every marginal's log-odds over all mean-field fixed points (``prior`` (J,)).

    A test's message c_t * prod(1 - pi_k) lies in [0, c1] for a response and in [c0, 0] for
    silence, so prior + sum(negative messages) <= lambda <= prior + sum(positive messages).
    """
    J = ys.shape[1]
    for i in range(lam_shape_n):
        for c in range(J):
            lo[i, c] = prior[c]
            hi[i, c] = prior[c]
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
def _dmi(z, alpha, beta, h_a, h_b):
    """d I / d z of ``_mi``: the information one more member buys where P(OR = 0) = z."""
    p1 = (1.0 - z) * (1.0 - beta) + z * alpha
    if p1 <= 0.0 or p1 >= 1.0:
        return 0.0
    return math.log((1.0 - p1) / p1) * (alpha - (1.0 - beta)) - h_a + h_b


@njit(cache=True)
def greedy_information(lam, q, pool, cols, weights, min_size, max_size, alpha, beta,
                       linear_below):
    """Greedy ensemble maximising the expected information of the next test.

    Adds, one at a time, the pool neuron that most increases sum_c w_c I(y_c; OR_c) under
    the factorised posterior (columns ``cols`` of ``lam`` score the choice, ``weights``
    (len(cols),) weigh them), and stops after
    ``min_size`` members once no neuron adds information: where a column's known partners
    are in the ensemble (or its OR is already likely) a further member saturates it, so
    columns with many inputs keep the ensemble small. A member that is a partner of column
    c with probability p < ``linear_below`` changes c's information by its first-order
    term -z p dI/dz (exact to O(p^2)), so a step costs one multiply-add per pool neuron and
    column; 0 scores every pair exactly.

    Returns the chosen pool positions (at most max_size) and the test's expected information
    (nats, unweighted, summed over ``cols``).
    """
    h_a = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha)
    h_b = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
    m = pool.shape[0]
    nc = cols.shape[0]
    p = np.empty((m, nc))  # probability that pool neuron a drives column b
    for a in range(m):
        i = pool[a]
        for b in range(nc):
            v = lam[i, cols[b]]
            p[a, b] = 0.0 if v == -32768 else _sigmoid(v / q)
    z = np.ones(nc)
    mi = np.empty(nc)
    slope = np.empty(nc)
    used = np.zeros(m, dtype=np.bool_)
    chosen = np.empty(max_size, dtype=np.int64)
    size = 0
    for s in range(max_size):
        for b in range(nc):
            mi[b] = _mi(z[b], alpha, beta, h_a, h_b)
            slope[b] = -weights[b] * z[b] * _dmi(z[b], alpha, beta, h_a, h_b)
        best = -1.0e300
        best_a = -1
        for a in range(m):
            if used[a]:
                continue
            gain = 0.0
            for b in range(nc):
                pab = p[a, b]
                if pab < linear_below:
                    gain += slope[b] * pab
                else:
                    gain += weights[b] * (_mi(z[b] * (1.0 - pab), alpha, beta, h_a, h_b)
                                          - mi[b])
            if gain > best:
                best = gain
                best_a = a
        if best_a < 0 or (s >= min_size and best <= 0.0):
            break
        used[best_a] = True
        chosen[s] = best_a
        size = s + 1
        for b in range(nc):
            z[b] *= 1.0 - p[best_a, b]
    info = 0.0  # exact and unweighted: the bits the chosen test is expected to give
    for b in range(nc):
        info += _mi(z[b], alpha, beta, h_a, h_b)
    return chosen[:size], info


@njit(cache=True)
def column_entropy(lam, cols, table, out):
    """out[b] = sum_i H(pi_i,cols[b]) (nats): what column cols[b] still has to learn.
    ``table`` (65536,) holds the binary entropy of every int16 code (uint16 view)."""
    for b in range(cols.shape[0]):
        c = cols[b]
        h = 0.0
        for i in range(lam.shape[0]):
            h += table[np.uint16(lam[i, c])]
        out[b] = h
