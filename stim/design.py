"""Choosing the next ensemble: random designs and an adaptive expected-information design.

Both respect a per-neuron rate limit: a neuron stimulated at time t is not eligible again
before t + 1 / max_rate_hz (``RateLimiter``), so the design never asks the safety gate for
something it will refuse.
"""
from __future__ import annotations

import numpy as np

from stim import _kernels as K
from stim.model import ensemble_size
from stim.posterior import ENTROPY_TABLE, Q, StreamingPosterior

__all__ = ["RateLimiter", "ensemble_size", "random_ensemble", "adaptive_ensemble", "warm_up"]


def warm_up() -> None:
    """Load the numba kernels (update, refresh, design) from their cache now, outside any
    timing and before the first stimulation."""
    w = StreamingPosterior(20, 0.05, 0.05, 2, max_targets=3)
    w.update(np.arange(3), np.zeros(20, np.uint8))
    w.refresh()
    adaptive_ensemble(w, np.random.default_rng(0), 3, np.ones(20, bool))


class RateLimiter:
    """Per-neuron minimum interval between stimulations.

    Parameters
    ----------
    n : neurons; max_rate_hz : most stimulations per second of any one neuron (inf: none).
    """

    def __init__(self, n: int, max_rate_hz: float = np.inf):
        if not max_rate_hz > 0:
            raise ValueError(f"max_rate_hz={max_rate_hz}: must be > 0 (inf for no limit)")
        self.min_gap_s = 0.0 if np.isinf(max_rate_hz) else 1.0 / float(max_rate_hz)
        self.last_s = np.full(n, -np.inf)

    def eligible(self, now_s: float) -> np.ndarray:
        """(n,) bool: neurons that may be stimulated at ``now_s`` (seconds)."""
        return now_s - self.last_s >= self.min_gap_s

    def record(self, members, now_s: float) -> None:
        """Note that ``members`` were stimulated at ``now_s``."""
        self.last_s[np.asarray(members)] = now_s


def _pool(eligible: np.ndarray, size: int) -> np.ndarray:
    idx = np.flatnonzero(eligible)
    if idx.size < size:
        raise ValueError(f"only {idx.size} neurons are eligible, the ensemble needs {size}: "
                         "lower the ensemble size or the per-neuron rate limit")
    return idx


def random_ensemble(rng: np.random.Generator, size: int, eligible: np.ndarray) -> np.ndarray:
    """``size`` distinct eligible neurons drawn uniformly; (size,) int32 sorted."""
    idx = _pool(eligible, size)
    return np.sort(rng.choice(idx, size=size, replace=False)).astype(np.int32)


def adaptive_ensemble(post: StreamingPosterior, rng: np.random.Generator, size: int,
                      eligible: np.ndarray, pool_size: int = 512, n_cols: int = 1024,
                      min_size: int = 1, linear_below: float = 0.05, focus: float = 1.0):
    """Greedy ensemble maximising the expected information of the next outcome vector.

    The expected information is sum_j I(y_j; OR_j) under the current factorised posterior.
    Members are added while they add information, up to ``size`` (the hardware's cap), so
    the ensemble's size adapts: large while most columns' partners are unknown, smaller
    once known partners of columns with many inputs would saturate their OR. Scoring every
    neuron on every column costs N * J per member, so the candidates are a pool of
    ``pool_size`` eligible neurons (half the least stimulated, half at random), scored on a
    random sample of ``n_cols`` columns.

    Returns
    -------
    members : (K,) int32 sorted, min_size <= K <= size; info_nats : expected information of
        this test, scaled to all columns.
    """
    idx = _pool(eligible, max(1, min_size))
    m = min(idx.size, max(pool_size, size))
    # half the pool is the least-stimulated eligible neurons: coverage, which a small pool
    # drawn at random from a large N loses (N = 10,000: 1,241 stimulations against 1,043)
    order = idx[np.lexsort((rng.random(idx.size), post.stim_count[idx]))]
    half = m // 2
    rest = rng.choice(order[half:], size=m - half, replace=False) if m - half else order[:0]
    pool = np.concatenate([order[:half], rest])
    cols = np.sort(rng.choice(post.J, size=min(post.J, n_cols), replace=False)).astype(np.int64)
    h = np.empty(cols.size)
    K.column_entropy(post.lam, cols, ENTROPY_TABLE, h)
    weights = (h / max(h.mean(), 1e-12)) ** focus
    chosen, info = K.greedy_information(post.lam, Q, pool.astype(np.int64), cols, weights,
                                        min(min_size, size), min(size, pool.size),
                                        post.alpha, post.beta, linear_below)
    return np.sort(pool[chosen]).astype(np.int32), float(info) * post.J / len(cols)
