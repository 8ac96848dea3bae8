"""Streaming variational-Bayes posterior over connections, updated one stimulation at a time.

Follows the paper (Draelos, Naumann & Pearson 2020) in the model and the fixed point: a
factorised Bernoulli posterior pi_ij for every candidate connection i -> j, whose log-odds is
the prior plus, for every test t that stimulated i, the test weight c_t (c1 = log((1-b)/a)
for a response, c0 = log(b/(1-a)) for silence) scaled by the probability that no other
member of S_t drives j. That is the mean-field fixed point of the paper's entropy-regularised
relaxation.

Differs from the paper's streaming code (which keeps only the last 10 tests' dual variables
and loses sensitivity as tests accumulate) in what it keeps: every test, stored sparsely
(the ensemble and one outcome byte per postsynaptic neuron), and the log-odds split as

    lambda_ij = prior + sum_t w_t c_tj  -  sum_t w_t c_tj (1 - prod_{k in S_t, k != i} (1 - pi_kj))
              = counting evidence B_ij  -  explaining-away correction C_ij.

B is exact and additive: a new test touches only the rows of the stimulated neurons (K rows
of J), which is the whole per-stimulation cost. C is non-zero only where another member of a
test is a plausible partner, so it is kept for the few active candidates of each column
(log-odds above ``tau``) and recomputed by mean-field coordinate ascent over all stored tests,
a column at a time: a test queues the columns where it responded with two candidates
stimulated, one a likely partner (where a response is explained away at once), each update
refreshes up to ``refresh_budget`` queued columns, oldest first, plus a round-robin share
that visits every column once per n / K tests, so no update waits on a full refresh. A
``refresh()`` of every column gives the batch mean-field solution over every test, not a
window. ``refreshes`` and ``columns_refreshed`` count them (also in ``summary()``).

Memory: lam is int16 log-odds in 1/64 nat (2 bytes per candidate connection: 5.0 GB for
N = 50,000 postsynaptic columns by 50,000 candidates; float32 would need 10 GB), plus one
byte per test and column for the outcomes, plus the candidate lists (8 bytes an entry, as
wide as the fullest column needs). ``post`` limits the postsynaptic columns tracked (e.g.
a sample) when that is still too much.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from stim import _kernels as K
from stim._kernels import I16_MAX, I16_MIN
from stim.model import UNOBSERVED, check_rates, test_weights

log = logging.getLogger(__name__)

Q = 64.0  # int16 units per nat: 1/128 nat rounding, range +-512 nats


def _sigmoid_table() -> np.ndarray:
    """(65536,) float32 marginal of every int16 log-odds code, indexed by its uint16 view."""
    codes = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.float64) / Q
    table = 1.0 / (1.0 + np.exp(-np.clip(codes, -700, 700)))
    table[np.arange(65536, dtype=np.uint16).view(np.int16) == -32768] = 0.0  # self
    return table.astype(np.float32)


_PI = _sigmoid_table()  # a gather instead of N*J exponentials
# binary entropy (nats) of every code's marginal, indexed like _PI (stim.design's scores)
ENTROPY_TABLE = np.where(_PI > 0, -_PI * np.log(np.maximum(_PI, 1e-30))
                         - (1 - _PI) * np.log(np.maximum(1 - _PI, 1e-30)),
                         0).astype(np.float32)


def marginals_of(lam: np.ndarray) -> np.ndarray:
    """float32 marginals of int16 log-odds codes (any shape; self: 0), by the table."""
    return _PI[lam.view(np.uint16)]


def candidate_threshold(prior: float, c1: float, max_targets: int) -> float:
    """Log-odds (nats) above which a connection is an active candidate, from the model.

    An inactive pair counts as pi = 0 in its tests' explaining away, so the threshold is at
    least logit(min(0.05, 1 / K)): the members of an ensemble of K left out sum to little.
    It is also above what one positive test gives a member, ``prior + c1`` (capped at
    logit 0.05): one response among K members is evidence about the ensemble, not about each
    member, and at N = 10,000 with K = 50 (prior -7.6, c1 3.8 at alpha 0.02, beta 0.1) a lower
    threshold made every member of every responding column a candidate (~1 million pairs).
    """
    p_floor = min(0.05, 1.0 / max_targets)
    logit_5 = math.log(0.05 / 0.95)
    return max(math.log(p_floor / (1 - p_floor)), min(prior + c1 + 0.1, logit_5))


class StreamingPosterior:
    """Posterior over which of ``n`` neurons drive each of the postsynaptic columns ``post``.

    Parameters
    ----------
    n : number of neurons (stimulation targets and candidates), >= 2.
    alpha, beta : false-response and miss rates of an outcome, > 0 with alpha + beta < 1.
    k : expected in-degree; the prior probability of a connection is k / (n - 1).
    post : (J,) neuron ids whose inputs are inferred (default all ``n``).
    max_targets : largest ensemble a test may have.
    max_candidates : active candidates kept per column (default n up to n = 2048, else
        40 x max_targets within 256..4096; the lists start at 4 x max_targets and widen to
        this as they fill); when full, new candidates are dropped and counted, and the
        column is rescanned at the next refresh to re-admit them once explained-away
        candidates have left.
    refresh_budget : most queued columns refreshed after each update (None: all of them;
        0: none, explaining away only on ``refresh()``).
    n_sweeps : coordinate-ascent sweeps per refresh.
    tau : log-odds above which a connection is an active candidate (default
        ``candidate_threshold``).
    adapt_prior : re-estimate each column's in-degree from its response rate (``k`` is then
        only the starting prior): columns with many inputs respond more often, and a prior
        from the mean in-degree holds their partners back. Off by default: on heavy-tailed
        connectivity it raised recall by ~0.5% at 400 stimulations for lower precision, and
        at N = 10,000 the noisy early rates lifted priors enough to double the candidates.
    """

    def __init__(self, n: int, alpha: float, beta: float, k: float, post=None,
                 max_targets: int = 50, max_candidates: int | None = None,
                 refresh_budget: int | None = None, n_sweeps: int = 2,
                 tau: float | None = None, adapt_prior: bool = False,
                 capacity: int = 1024):
        if not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"n={n!r}: the number of neurons must be an int >= 2")
        check_rates(alpha, beta)
        if not 0 < k < n - 1:
            raise ValueError(f"k={k!r}: the expected in-degree must be in (0, n-1)")
        if max_targets < 1:
            raise ValueError(f"max_targets={max_targets}: must be >= 1")
        self.n = int(n)
        self.alpha, self.beta = float(alpha), float(beta)
        self.k = float(k)
        self.post = np.arange(n, dtype=np.int32) if post is None else np.asarray(post, np.int32)
        if (self.post.ndim != 1 or self.post.size == 0 or self.post.min() < 0
                or self.post.max() >= n):
            raise ValueError(f"post: expected a 1-D array of neuron ids in [0, {n}), "
                             f"got shape {self.post.shape}")
        self.J = len(self.post)
        rho = self.k / (self.n - 1)
        self.prior = math.log(rho / (1 - rho))
        self.c1, self.c0 = test_weights(alpha, beta)
        self.tau = candidate_threshold(self.prior, self.c1, max_targets) if tau is None \
            else float(tau)
        self.tau_q = int(round(self.tau * Q))
        self.max_targets = int(max_targets)
        # large ensembles leave many plausible candidates per column until explained away
        cmax = int(max_candidates) if max_candidates is not None else \
            self.n if self.n <= 2048 else max(256, min(4096, 40 * self.max_targets))
        if refresh_budget is not None and int(refresh_budget) < 0:
            raise ValueError(f"refresh_budget={refresh_budget}: must be >= 0 or None")
        self.refresh_budget = self.J if refresh_budget is None else int(refresh_budget)
        self.n_sweeps = int(n_sweeps)
        self.lam = np.full((self.n, self.J), int(round(self.prior * Q)), dtype=np.int16)
        self.col_prior = np.full(self.J, round(self.prior * Q) / Q)  # log-odds in lam, nats
        self.adapt_prior = bool(adapt_prior)
        self._n_obs = np.zeros(self.J)  # weighted observed tests per column
        self._n_pos = np.zeros(self.J)  # ... of which responded
        self._stims_obs = 0.0  # weighted ensemble sizes summed
        self._w_tests = 0.0  # weights summed
        self.lam[self.post, np.arange(self.J)] = -32768  # no self-connections
        self.max_candidates = cmax
        # the lists grow as they fill (_make_room; a copy of them all, so rarely): at
        # N = 10,000 and 50 targets a column holds 20-60 candidates, and lists of 2,000
        # would be 160 MB
        width = min(cmax, 4 * self.max_targets)
        self.cand = np.zeros((self.J, width), dtype=np.int32)
        self.candC = np.zeros((self.J, width), dtype=np.float32)
        self.ncand = np.zeros(self.J, dtype=np.int32)
        self.overflow = np.zeros(1, dtype=np.int64)
        self.overflow_total = 0  # candidates dropped because a column's list was full
        self.full = np.zeros(self.J, dtype=np.bool_)  # columns to rescan at the next refresh
        self._mark = np.zeros(self.n, dtype=np.bool_)  # refresh's scratch
        self.dirty = np.zeros(self.J, dtype=np.bool_)  # column queued for a refresh
        self._queue = np.zeros(self.J, dtype=np.int32)  # ring of queued columns
        self._qs = np.zeros(2, dtype=np.int64)  # ring head, queued count
        self._due = np.zeros(2 * self.J, dtype=np.int64)  # columns to refresh after a test
        self._seen = np.full(self.J, -1, dtype=np.int32)  # absorb's scratch
        self._delta = np.zeros(self.J, dtype=np.int32)
        self._old_row = np.zeros(self.J, dtype=np.int16)
        self._responded = np.zeros(self.J, dtype=np.int32)
        self._yrow = np.zeros(self.J, dtype=np.uint8)  # the last test's outcomes
        self.refreshes = 0  # full refreshes (every column)
        self.columns_refreshed = 0  # column refreshes, queued and full
        self._sweep_at, self._sweep_debt = 0, 0.0  # round-robin refresh cursor, columns owed
        self._carry = (0.0, 0.0)  # quantisation error carried to the next test (c1, c0)
        self.tests_of = np.full((self.n, 16), -1, dtype=np.int32)  # each neuron's tests
        self.n_tests_of = np.zeros(self.n, dtype=np.int32)  # ... weighted > 0, in order
        self._base = np.zeros(cmax, dtype=np.float64)
        self._l1m = np.zeros(cmax, dtype=np.float64)
        self._start = np.zeros(cmax + 1, dtype=np.int64)
        self._cols = np.arange(self.J, dtype=np.int64)
        self._col_of = np.full(self.n, -1, dtype=np.int64)  # column of each neuron, -1: none
        self._col_of[self.post] = np.arange(self.J)
        self.stim_count = np.zeros(self.n, dtype=np.int64)  # tests that stimulated each neuron
        self.version = 0  # bumped whenever lam changes (update, refresh): caches key on it
        if self.tau_q < int(round(self.prior * Q)):
            # the prior alone is above tau (small n): every pair starts active, since the
            # absorb kernel only activates pairs that cross tau upwards
            if cmax < self.n - 1:
                raise ValueError(f"max_candidates={cmax}: the prior {rho:.3f} exceeds the "
                                 f"activity threshold, so it must be >= n-1 = {self.n - 1}")
            self.ncand[:] = self.n - 1
            self._make_room()
            for c, j in enumerate(self.post):
                self.cand[c, : self.n - 1] = np.delete(np.arange(self.n, dtype=np.int32), j)
        self._alloc(max(16, int(capacity)))
        self.n_tests = 0

    def _alloc(self, cap: int) -> None:
        old = getattr(self, "members", None)
        kmax = self.max_targets
        arrays = {"members": ((cap, kmax), np.int32, -1), "ksize": ((cap,), np.int32, 0),
                  "weight": ((cap,), np.float32, 0), "_logz": ((cap,), np.float64, 0)}
        for name, (shape, dtype, fill) in arrays.items():
            new = np.full(shape, fill, dtype=dtype)
            if old is not None:
                prev = getattr(self, name)
                new[: len(prev)] = prev
            setattr(self, name, new)
        # outcomes stored column-major: a column's refresh reads its own row of tests
        ycol = np.full((self.J, cap), UNOBSERVED, dtype=np.uint8)
        if old is not None:
            ycol[:, : self._ycol.shape[1]] = self._ycol
        self._ycol = ycol

    def _make_room(self) -> None:
        """Widen the candidate lists (up to ``max_candidates``) so that each has room for
        a test's members: a full list drops candidates, a wide one costs memory. (A
        rescan fills a list at most to its width and is completed at the column's next
        refresh.)"""
        width = self.cand.shape[1]
        need = int(self.ncand.max()) + self.max_targets
        if width < self.max_candidates and need > width:
            wider = min(self.max_candidates, max(2 * width, need))
            for name in ("cand", "candC"):
                old = getattr(self, name)
                new = np.zeros((self.J, wider), dtype=old.dtype)
                new[:, :width] = old
                setattr(self, name, new)

    @property
    def ys(self) -> np.ndarray:
        """(capacity, J) uint8 outcome of each test for each column (a view; rows past
        ``n_tests`` are unobserved)."""
        return self._ycol.T

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the posterior's arrays."""
        names = ("lam", "cand", "candC", "ncand", "tests_of", "n_tests_of", "members", "ksize",
                 "weight", "_ycol", "_logz", "_base", "_l1m", "_col_of", "stim_count", "full",
                 "_mark", "dirty", "_queue", "_due", "_seen", "_start", "_delta", "_old_row",
                 "_responded", "_yrow")
        return int(sum(getattr(self, a).nbytes for a in names))

    def update(self, members, y, weight: float = 1.0) -> None:
        """Fold one stimulation into the posterior.

        Parameters
        ----------
        members : (K,) int neuron ids stimulated, distinct, 1 <= K <= max_targets.
        y : (J,) outcome per postsynaptic column: 0 silent, 1 responded, 2 unobserved
            (the stimulated neurons' own outcomes are ignored whatever they say).
        weight : in [0, 1]; < 1 down-weights a confounded stimulation (0 discards it).
        """
        m = np.asarray(members)
        if m.ndim != 1 or not np.issubdtype(m.dtype, np.integer):
            raise TypeError(f"members: expected a 1-D integer array, got {m.dtype} {m.shape}")
        if not 1 <= m.size <= self.max_targets:
            raise ValueError(f"members: {m.size} targets; a test needs 1..{self.max_targets} "
                             "(raise max_targets)")
        if not K.distinct_ids(m, self.n, self._mark):
            raise ValueError(f"members: ids must be distinct and in [0, {self.n})")
        yy = np.asarray(y)
        if yy.shape != (self.J,):
            raise ValueError(f"y: shape {yy.shape}, expected ({self.J},), one outcome per column")
        if not (np.issubdtype(yy.dtype, np.integer) or yy.dtype == bool):
            raise TypeError(f"y: expected integer outcomes 0, 1 or 2, got dtype {yy.dtype}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight={weight}: must be in [0, 1]")
        t = self.n_tests
        if t == len(self.ksize):
            self._alloc(2 * t)
        if not K.record_test(m, yy, self._col_of, t, float(weight), self._yrow, self._ycol,
                             self._n_obs, self._n_pos):
            raise ValueError("y: outcomes must be 0 (silent), 1 (responded) or 2 (unobserved)")
        if weight > 0:
            self._stims_obs += weight * m.size
            self._w_tests += weight
        self.stim_count[m] += 1
        self.version += 1
        self.members[t, : m.size] = m
        self.ksize[t] = m.size
        self.weight[t] = weight
        self.n_tests += 1
        if weight > 0:
            # error diffusion: the int16 store rounds each test's weight to 1/Q nat, and the
            # carried error keeps small weights (c0 = -0.27 at a 0.7 miss rate) unbiased
            e1, e0 = weight * self.c1 * Q + self._carry[0], weight * self.c0 * Q + self._carry[1]
            dq1, dq0 = round(e1), round(e0)
            self._carry = (e1 - dq1, e0 - dq0)
            if self.n_tests_of[m].max() >= self.tests_of.shape[1]:
                wider = np.full((self.n, 2 * self.tests_of.shape[1]), -1, dtype=np.int32)
                wider[:, : self.tests_of.shape[1]] = self.tests_of
                self.tests_of = wider
            K.absorb_test(self.lam, self.members[t], m.size, self._yrow, dq1, dq0,
                          self.tau_q, t, self.tests_of, self.n_tests_of, self.cand,
                          self.candC, self.ncand, self.overflow, self.full,
                          self.dirty, self._queue, self._qs, self._seen, self._delta,
                          self._old_row, self._responded)
        if self.refresh_budget:
            # queued columns first, then the sweep's share: every column once per n / K tests
            self._sweep_debt += self.J * m.size / self.n
            r = min(int(self._sweep_debt), self.J)
            self._sweep_debt -= r
            due = K.due_columns(self._queue, self._qs, self.dirty, self.refresh_budget,
                                self._sweep_at, r, self._due)
            self._sweep_at = (self._sweep_at + r) % self.J
            self._adapt_prior(self._due[due - r: due])
            # one sweep: each column starts from its last fixed point
            self._refresh(self._due[:due], 1)
        self._make_room()

    def refresh(self, n_sweeps: int | None = None, loopy: bool = False) -> None:
        """Recompute the explaining-away corrections of every active candidate over all tests.

        loopy : loopy belief propagation instead of mean field (``stim._kernels._bp_sweeps``):
            better marginals under heavy misses, ~3x the cost, so for when an estimate is read.
        """
        self.dirty[:] = False
        self._qs[:] = 0
        self._adapt_prior(self._cols)
        self._refresh(self._cols, self.n_sweeps if n_sweeps is None else int(n_sweeps), loopy)
        self._make_room()
        self.refreshes += 1

    def _adapt_prior(self, cols: np.ndarray) -> None:
        """Empirical-Bayes prior for ``cols``: each column's in-degree k_c from its response
        rate r = alpha + (1 - alpha - beta)(1 - (1 - k_c / (n-1))^K), shrunk towards the
        starting prior by 20 pseudo-tests, and moved (every log-odds of the column) once it
        differs by more than 0.25 nat. Moved columns are rescanned for new candidates at
        their refresh (``full``)."""
        if not self.adapt_prior or self._stims_obs == 0 or len(cols) == 0:
            return
        a, b, nm1 = self.alpha, self.beta, self.n - 1
        kbar = self._stims_obs / self._w_tests  # mean ensemble size
        rho0 = self.k / nm1
        r0 = a + (1 - a - b) * (1 - (1 - rho0) ** kbar)
        r = (self._n_pos[cols] + 20 * r0) / (self._n_obs[cols] + 20)
        q_or = np.clip((r - a) / (1 - a - b), 1e-9, 1 - 1e-9)
        rho = np.clip(1 - (1 - q_or) ** (1 / kbar), rho0 / 4, min(8 * rho0, 0.5))
        new = np.log(rho / (1 - rho))
        moved = cols[np.abs(new - self.col_prior[cols]) > 0.25]
        for c, v in zip(moved, new[np.abs(new - self.col_prior[cols]) > 0.25]):
            shift = int(round((v - self.col_prior[c]) * Q))
            col = self.lam[:, c].astype(np.int32)
            keep = col == -32768
            col = np.clip(col + shift, I16_MIN, I16_MAX)
            col[keep] = -32768
            self.lam[:, c] = col
            self.col_prior[c] += shift / Q
            self.full[c] = True  # pairs lifted above tau join at the refresh's rescan

    @property
    def queued(self) -> int:
        """Columns whose explaining-away correction awaits a refresh."""
        return int(self._qs[1])

    def _refresh(self, cols: np.ndarray, n_sweeps: int, loopy: bool = False) -> None:
        K.refresh_columns(cols, self.lam, self.cand, self.candC, self.ncand, self.weight,
                          self._ycol, self.tests_of, self.n_tests_of, self.c1,
                          self.c0, Q, self.tau, n_sweeps, self._logz, self._base, self._l1m,
                          self._start, self.full, self.tau_q, self._mark,
                          loopy)
        self.columns_refreshed += len(cols)
        self.version += 1
        if self.overflow[0]:
            log.warning("candidate lists full %d times: raise max_candidates", self.overflow[0])
            self.overflow_total += int(self.overflow[0])
            self.overflow[0] = 0

    def log_odds(self) -> np.ndarray:
        """(N, J) float32 posterior log-odds (nats); -inf for self-connections."""
        out = self.lam.astype(np.float32) / Q
        out[self.lam == -32768] = -np.inf
        return out

    def marginals(self) -> np.ndarray:
        """(N, J) float32 posterior probability of each connection i -> post[c] (0 for self)."""
        return marginals_of(self.lam)

    def estimate(self, threshold: float = 0.5) -> np.ndarray:
        """(E, 2) int32 (presynaptic, postsynaptic) ids whose marginal exceeds ``threshold``."""
        thr = int(math.floor(math.log(threshold / (1 - threshold)) * Q))
        i, c = np.nonzero(self.lam > thr)
        return np.stack([i, self.post[c]], axis=1).astype(np.int32)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, J) lower and upper bounds on the marginals over all mean-field fixed points."""
        lo = np.empty((self.n, self.J))
        hi = np.empty((self.n, self.J))
        t = self.n_tests
        K.count_bounds(self.n, self.members[:t], self.ksize[:t], self.weight[:t], self.ys[:t],
                       self.col_prior, self.c1, self.c0, lo, hi)
        return 1 / (1 + np.exp(-lo)), 1 / (1 + np.exp(-hi))

    def summary(self, eps: float = 0.01, marginals: np.ndarray | None = None) -> dict:
        """Stopping statistics: confident fraction and the in-degree's 95% credible interval.

        Each marginal pi is outside [eps, 1 - eps] or not; the number of connections is a sum
        of independent Bernoullis under the posterior (mean sum pi, variance sum pi (1 - pi)).
        """
        unsure = self._unsure(eps)
        p = self.marginals() if marginals is None else marginals
        mean = float(p.sum(dtype=np.float64))
        sd = float(np.sqrt((p * (1 - p)).sum(dtype=np.float64)))
        return {"n_stims": self.n_tests, "unsure": unsure,
                "confident_fraction": 1.0 - unsure / (self.n * self.J),
                "edges_mean": mean, "edges_ci95": (mean - 1.96 * sd, mean + 1.96 * sd),
                "active_candidates": int(self.ncand.sum()), "refreshes": self.refreshes,
                "columns_refreshed": self.columns_refreshed, "queued": self.queued}

    def _unsure(self, eps: float) -> int:
        """Number of marginals inside [eps, 1 - eps]."""
        lo_q, hi_q = (int(round(math.log(e / (1 - e)) * Q)) for e in (eps, 1 - eps))
        return int(np.count_nonzero((self.lam > lo_q) & (self.lam < hi_q)))

    def confident(self, eps: float = 0.01) -> bool:
        """Stopping rule: every marginal lies outside [eps, 1 - eps]."""
        return self._unsure(eps) == 0
