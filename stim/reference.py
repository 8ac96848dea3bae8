"""Batch convex decoders of one postsynaptic neuron's group-testing problem (cvxpy).

The slow, trusted references the streaming posterior is checked against.

``entropy_relaxation`` is the paper's program (Draelos, Naumann & Pearson 2020, eq. for the
VB-equivalent relaxation), per postsynaptic neuron over T tests and N candidates::

    maximise    sum_t c_t a_t - mu sum_i w_i + sum_t H(a_t) + sum_i H(w_i)
    subject to  a_t <= sum_{i in S_t} w_i          (a test is positive only through a member)
                w_i <= a_t      for i in S_t        (a member that connects makes it positive)
                0 <= a, w <= 1

with c_t = log[(1-alpha)(1-beta)/(alpha beta)] y_t - log[(1-alpha)/beta], mu = -logit(prior)
and H the binary entropy, written with cvxpy's ``entr`` (exponential cones, Clarabel or SCS).

``noisy_lp`` is Malioutov & Malyutov's noisy LP decoder of group testing::

    minimise    sum_i w_i + lam sum_t xi_t
    subject to  sum_{i in S_t} w_i + xi_t >= 1     for positive tests
                sum_{i in S_t} w_i = xi_t          for negative tests
                0 <= w <= 1,  xi >= 0
"""
from __future__ import annotations

import math

import numpy as np

from stim.model import UNOBSERVED, check_rates


def _incidence(members: np.ndarray, ksize: np.ndarray, n: int):
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(ksize)), ksize)
    cols = np.concatenate([members[t, : ksize[t]] for t in range(len(ksize))]) \
        if len(ksize) else np.zeros(0, int)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ksize), n)), rows, cols


def _check(members, ksize, y, n):
    members = np.asarray(members)
    ksize = np.asarray(ksize)
    y = np.asarray(y)
    if members.ndim != 2 or ksize.shape != (members.shape[0],) or y.shape != ksize.shape:
        raise ValueError("members (T, K), ksize (T,) and y (T,) must describe the same T tests")
    keep = y != UNOBSERVED
    return members[keep], ksize[keep], y[keep].astype(float)


def _solve(prob, solver: str | None, name: str):
    import cvxpy as cp

    prob.solve(solver=solver or cp.CLARABEL)
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"{name}: solver status {prob.status}; try solver='SCS'")


def entropy_relaxation(members, ksize, y, n: int, alpha: float, beta: float, prior: float,
                       exclude: int | None = None, solver: str | None = None):
    """Solve the paper's entropy-regularised relaxation for one postsynaptic neuron.

    Parameters
    ----------
    members : (T, K) int stimulated ids (padded), ksize : (T,) used width, y : (T,) outcomes
        (0/1; 2 = unobserved, dropped).
    n : candidates; alpha, beta : noise rates; prior : prior connection probability.
    exclude : a candidate forced to 0 (the neuron itself).
    solver : cvxpy solver name (default Clarabel).

    Returns
    -------
    w : (n,) the relaxed connection marginals; a : (T',) the relaxed test outcomes.
    """
    import cvxpy as cp

    check_rates(alpha, beta)
    members, ksize, y = _check(members, ksize, y, n)
    A, rows, cols = _incidence(members, ksize, n)
    c = math.log((1 - alpha) * (1 - beta) / (alpha * beta)) * y - math.log((1 - alpha) / beta)
    mu = -math.log(prior / (1 - prior))
    w = cp.Variable(n)
    a = cp.Variable(len(ksize))
    import scipy.sparse as sp

    E = sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), cols)), shape=(len(rows), n))
    F = sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), rows)),
                      shape=(len(rows), len(ksize)))
    obj = c @ a - mu * cp.sum(w) + cp.sum(cp.entr(a) + cp.entr(1 - a)) \
        + cp.sum(cp.entr(w) + cp.entr(1 - w))
    cons = [a <= A @ w, E @ w <= F @ a, a >= 0, a <= 1, w >= 0, w <= 1]
    if exclude is not None:
        cons.append(w[int(exclude)] == 0)
    prob = cp.Problem(cp.Maximize(obj), cons)
    _solve(prob, solver, "entropy_relaxation")
    return np.clip(w.value, 0, 1), np.clip(a.value, 0, 1)


def noisy_lp(members, ksize, y, n: int, penalty: float = 1.0, exclude: int | None = None,
             solver: str | None = None) -> np.ndarray:
    """Malioutov–Malyutov noisy LP decoder for one postsynaptic neuron.

    ``penalty`` (lam above) prices a violated test against one more connection; returns (n,) w.
    """
    import cvxpy as cp

    members, ksize, y = _check(members, ksize, y, n)
    A, _, _ = _incidence(members, ksize, n)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    w = cp.Variable(n)
    xi = cp.Variable(len(ksize))
    cons = [w >= 0, w <= 1, xi >= 0]
    if len(pos):
        cons.append(A[pos] @ w + xi[pos] >= 1)
    if len(neg):
        cons.append(A[neg] @ w == xi[neg])
    if exclude is not None:
        cons.append(w[int(exclude)] == 0)
    prob = cp.Problem(cp.Minimize(cp.sum(w) + penalty * cp.sum(xi)), cons)
    _solve(prob, solver, "noisy_lp")
    return np.clip(w.value, 0, 1)
