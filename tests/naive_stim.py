"""Plain, slow versions of the stim kernels, for tests to check the fast ones against."""
from __future__ import annotations

import math

import numpy as np


def mean_field(members, ksize, ys, n, post, alpha, beta, prior, sweeps=30):
    """Dense mean-field VB over every test, float64, Gauss-Seidel; returns (n, J) marginals.

    lambda_ij = logit(prior) + sum_{t: i in S_t, y_tj observed} c(y_tj) prod_{k in S_t, k != i}
    (1 - pi_kj), iterated to a fixed point.
    """
    c1, c0 = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    lp = math.log(prior / (1 - prior))
    J = len(post)
    pi = np.full((n, J), prior)
    pi[post, np.arange(J)] = 0.0
    tests_of = [[] for _ in range(n)]
    for t in range(len(ksize)):
        for i in members[t, : ksize[t]]:
            tests_of[i].append(t)
    for _ in range(sweeps):
        for c in range(J):
            for i in range(n):
                if i == post[c]:
                    continue
                lam = lp
                for t in tests_of[i]:
                    yy = ys[t, c]
                    if yy == 2:
                        continue
                    prod = 1.0
                    for k in members[t, : ksize[t]]:
                        if k != i:
                            prod *= 1 - pi[k, c]
                    lam += (c1 if yy == 1 else c0) * prod
                pi[i, c] = 1 / (1 + math.exp(-lam))
    return pi


def loopy_bp(members, ksize, ys, n, post, alpha, beta, prior, sweeps=30):
    """Dense loopy belief propagation over every test, float64; returns (n, J) marginals.

    Each observed test t of column j is a noisy-OR factor over S_t. Its message to member i
    is log p(y | i drives j) - log p(y | i does not) = log p(y | OR=1) - log(z p(y | OR=0)
    + (1 - z) p(y | OR=1)), with z = prod_{k in S_t, k != i} (1 - sigmoid(lambda_kj - m_tkj))
    from the other members' cavity log-odds; lambda_ij = logit(prior) + sum_t m_tij.
    Gauss-Seidel over neurons, each updating all its incoming messages.
    """
    like = np.array([[beta, 1 - alpha], [1 - beta, alpha]])  # [y] -> p(y | OR=1), p(y | OR=0)
    T, J = len(ksize), len(post)
    tests_of = [[t for t in range(T) if i in members[t, : ksize[t]]] for i in range(n)]
    pi = np.zeros((n, J))
    for c in range(J):
        obs = [t for t in range(T) if ys[t, c] != 2]
        msg = np.zeros((T, n))
        for t in obs:  # counting evidence to start
            p1, p0 = like[ys[t, c]]
            msg[t, members[t, : ksize[t]]] = math.log(p1 / p0)
        lam = math.log(prior / (1 - prior)) + msg.sum(axis=0)
        for _ in range(sweeps):
            for i in range(n):
                for t in tests_of[i]:
                    if ys[t, c] == 2:
                        continue
                    others = [k for k in members[t, : ksize[t]] if k != i]
                    z = np.prod(1 - 1 / (1 + np.exp(-(lam[others] - msg[t, others]))))
                    p1, p0 = like[ys[t, c]]
                    new = math.log(p1) - math.log(z * p0 + (1 - z) * p1)
                    lam[i] += new - msg[t, i]
                    msg[t, i] = new
        pi[:, c] = 1 / (1 + np.exp(-lam))
        pi[post[c], c] = 0.0
    return pi


def _mi(z, alpha, beta):
    """Information (nats) between an outcome and OR when P(OR = 0) = z."""
    def h(p):
        return 0.0 if p <= 0 or p >= 1 else -p * math.log(p) - (1 - p) * math.log(1 - p)

    return h((1 - z) * (1 - beta) + z * alpha) - z * h(alpha) - (1 - z) * h(beta)


def ensemble_information(pi, members, alpha, beta):
    """Expected information (nats) of testing ``members`` under (n, J) marginals ``pi``."""
    z = np.prod(1 - pi[np.asarray(members)], axis=0)
    return sum(_mi(zb, alpha, beta) for zb in z)


def greedy_information(pi, pool, size, alpha, beta, weights=None, min_size=None):
    """Plain greedy expected-information ensemble over (n, J) marginals; returns pool
    positions: adds the member with the largest weighted gain, stopping after ``min_size``
    (default ``size``) once no member adds information."""
    def mi(z):
        return _mi(z, alpha, beta)

    w = np.ones(pi.shape[1]) if weights is None else weights
    min_size = size if min_size is None else min_size
    z = np.ones(pi.shape[1])
    chosen = []
    for s in range(size):
        gains = [(-np.inf if a in chosen else sum(w[b] * (mi(z[b] * (1 - pi[pool[a], b]))
                                                          - mi(z[b])) for b in range(len(z))))
                 for a in range(len(pool))]
        best = int(np.argmax(gains))
        if s >= min_size and gains[best] <= 0:
            break
        chosen.append(best)
        z = z * (1 - pi[pool[best]])
    return chosen
