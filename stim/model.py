"""The noisy OR-channel model of an ensemble stimulation, and a simulator of it.

A test stimulates an ensemble S of presynaptic neurons. Postsynaptic neuron j responds when
one of its presynaptic partners is in S (an OR over S), and the observed outcome is flipped
by a false-positive rate ``alpha`` (responds with no partner in S) and a false-negative rate
``beta`` (silent although a partner was in S). Each postsynaptic neuron is one sparse
group-testing problem over N candidates, all sharing the same tests (Draelos, Naumann &
Pearson 2020, arXiv 2007.13911).

Outcome codes (uint8) used across ``stim``: 0 silent, 1 responded, 2 not observed (the
neuron was itself stimulated, or its trace was missing).
"""
from __future__ import annotations

import math

import numpy as np

SILENT, RESPONDED, UNOBSERVED = 0, 1, 2


def check_rates(alpha: float, beta: float) -> None:
    """Raise ValueError unless 0 < alpha, 0 < beta and alpha + beta < 1.

    Any such channel carries information (a response is likelier with a partner in the
    ensemble than without): single-trial photostimulation misses ~70% of the time with ~8%
    false responses (Randi et al. 2023), which is inside this range.
    """
    for name, v in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(v, (int, float, np.floating)) and 0.0 < float(v) < 1.0):
            raise ValueError(f"{name}={v!r}: the noise rate must be a number in (0, 1); "
                             "0 makes the log-likelihood infinite")
    if not float(alpha) + float(beta) < 1.0:
        raise ValueError(f"alpha + beta = {float(alpha) + float(beta):g}: the false-response "
                         "and miss rates must sum to < 1, else a response carries no evidence "
                         "of a connection (lower one of them)")


def test_weights(alpha: float, beta: float) -> tuple[float, float]:
    """Log-likelihood ratio log p(y | OR=1) - log p(y | OR=0) for y = 1 and y = 0, in nats.

    These are the paper's c_t = log[(1-a)(1-b)/(ab)] y - log[(1-a)/b]: c1 = log((1-b)/a),
    c0 = log(b/(1-a)).
    """
    check_rates(alpha, beta)
    return math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))


def random_partners(n: int, k: int, rng: np.random.Generator, n_post: int | None = None,
                    post: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw a random connectome with in-degree exactly ``k`` and no self-connections.

    Parameters
    ----------
    n : number of neurons (candidates for every postsynaptic neuron).
    k : in-degree (presynaptic partners per postsynaptic neuron), 1 <= k < n.
    rng : numpy Generator (explicit randomness state).
    n_post, post : which postsynaptic neurons to draw partners for (default all n); a
        sample keeps memory small at large n.

    Returns
    -------
    post : (J,) int32 postsynaptic neuron ids.
    partners : (J, k) int32 presynaptic partner ids of each.
    """
    if not 1 <= k < n:
        raise ValueError(f"k={k}: the in-degree must be in [1, n-1] with n={n}")
    if post is None:
        post = np.arange(n, dtype=np.int32) if n_post is None else \
            np.sort(rng.choice(n, size=n_post, replace=False)).astype(np.int32)
    post = np.asarray(post, dtype=np.int32)
    partners = np.empty((len(post), k), dtype=np.int32)
    for r, j in enumerate(post):
        pick = rng.choice(n - 1, size=k, replace=False)
        pick[pick >= j] += 1  # skip self
        partners[r] = np.sort(pick)
    return post, partners


def adjacency(n: int, post: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """Dense bool (n, J) adjacency, entry [i, c] true when i drives post[c] (partners in
    any form ``truth_pairs`` takes)."""
    adj = np.zeros((n, len(post)), dtype=bool)
    adj[truth_pairs(partners, n, len(post))] = True
    return adj


def ensemble_size(n: int, k: float, cap: int | None) -> int:
    """Ensemble size ln2 * n / k (half of the tests positive for each neuron), capped.

    Parameters
    ----------
    n : population size; k : expected in-degree; cap : the hardware's maximum number of
        simultaneous targets (None = no cap).
    """
    size = max(1, int(round(math.log(2) * n / max(k, 1e-9))))
    if cap is not None:
        size = min(size, int(cap))
    return min(size, n)


def simulate_outcome(members: np.ndarray, post: np.ndarray, partners: np.ndarray,
                     n: int, alpha: float, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Outcomes of one test under the noisy OR channel.

    Parameters
    ----------
    members : (K,) int neuron ids stimulated.
    post, partners : from ``random_partners``; (J, k) partner ids, entries < 0 are padding.
    n : population size; alpha, beta : false-response and miss rates.

    Returns
    -------
    y : (J,) uint8, 0/1 per postsynaptic neuron, 2 for the stimulated neurons themselves.
    """
    in_s = np.zeros(n + 1, dtype=bool)  # in_s[n] = in_s[-1] stays False: padding never hits
    in_s[members] = True
    hit = in_s[partners].any(axis=1)
    u = rng.random(len(post))
    y = np.where(hit, u >= beta, u < alpha).astype(np.uint8)
    y[in_s[post]] = UNOBSERVED
    return y


def truth_pairs(partners, n: int, J: int) -> tuple[np.ndarray, np.ndarray]:
    """The true connections as (presynaptic ids, column indices), for any in-degree.

    Parameters
    ----------
    partners : the true presynaptic partners of each of J columns, as a (J, k) int array
        (entries < 0 are padding, so ragged in-degrees fit one array), a sequence of J
        id collections (arrays, lists or sets of any length), or a bool (n, J) adjacency.
    n, J : neurons and columns, to check the shape.
    """
    a = partners if isinstance(partners, np.ndarray) else None
    if a is not None and a.dtype == bool:
        if a.shape != (n, J):
            raise ValueError(f"partners: bool adjacency of shape {a.shape}, expected ({n}, {J})")
        return np.nonzero(a)
    if a is not None and a.ndim == 2:
        rows = a.astype(np.int64)
    else:
        if len(partners) != J:
            raise ValueError(f"partners: {len(partners)} partner sets, expected one per column "
                             f"({J})")
        sets = [np.unique(np.fromiter(p, dtype=np.int64)) for p in partners]
        width = max((len(p) for p in sets), default=0)
        rows = np.full((J, width), -1, dtype=np.int64)
        for c, p in enumerate(sets):
            rows[c, : len(p)] = p
    if rows.shape[0] != J:
        raise ValueError(f"partners: {rows.shape[0]} rows, expected one per column ({J})")
    keep = rows >= 0
    if rows.size and rows.max() >= n:
        raise ValueError(f"partners: ids must be < n = {n}")
    return rows[keep], np.nonzero(keep)[0]


def score(log_odds: np.ndarray, partners) -> tuple[float, float]:
    """Precision and recall of the estimate pi > 0.5 against the true partners.

    Parameters
    ----------
    log_odds : (N, J) posterior log-odds of each connection i -> column c (any scale: only
        the sign is read, so ``StreamingPosterior.lam`` serves as is).
    partners : the true partners of each column, in any form ``truth_pairs`` takes (any
        in-degree per column).
    """
    i, c = truth_pairs(partners, *log_odds.shape)
    tp = int(np.count_nonzero(log_odds[i, c] > 0))
    pos = int(np.count_nonzero(log_odds > 0))
    return tp / max(pos, 1), tp / max(i.size, 1)


def _h2(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def mi_bits(x: float, alpha: float, beta: float) -> float:
    """Information (bits) one outcome carries about OR when P(OR = 1) = ``x``."""
    p1 = x * (1 - beta) + (1 - x) * alpha
    return _h2(p1) - x * _h2(beta) - (1 - x) * _h2(alpha)


def capacity_bits(alpha: float, beta: float) -> float:
    """Capacity (bits/test) of the binary channel flipping 0->1 with alpha, 1->0 with beta."""
    # over the input P(OR=1): one-dimensional and smooth, so a grid is exact enough
    return max(mi_bits(x, alpha, beta) for x in np.linspace(1e-4, 1 - 1e-4, 4001))


def lower_bound_tests(n: int, k: int, alpha: float, beta: float,
                      size: int | None = None) -> float:
    """Information-theoretic lower bound on tests: log2 C(n-1, k) / bits per test (per neuron).

    size : None for the capacity (P(OR = 1) free, uncapped ensembles); else the bits that
        ensembles of this size allow, P(OR = 1) = 1 - (1 - k / (n - 1))^size.
    """
    bits = (math.lgamma(n) - math.lgamma(k + 1) - math.lgamma(n - k)) / math.log(2)
    if size is None:
        return bits / capacity_bits(alpha, beta)
    return bits / mi_bits(1 - (1 - k / (n - 1)) ** size, alpha, beta)
