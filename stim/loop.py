"""The closed-loop mapping policy as a library: which neurons, when to stimulate, when to stop.

``MappingLoop`` is everything the ``Planner`` node (``stim.node``) decides, usable without a
bus: feed it imaging frames, movement reports and fired stimulations; ask it for the next
ensemble when a frame arrives; read its figures; save its estimate.

* **Population.** The neurons stimulated (and so mapped): a region of the anatomy, or all,
  capped at the number that the run's time resolves (``population_size``). Their outgoing
  connections to every imaged neuron are inferred; scores count only those.
* **Gate** (``stim.gate``). A stimulation fires only in quiescence: the behaviour camera's
  bout detector gates when a camera runs, the decoder where none does; a movement report
  counts only for a frame near the newest imaging frame.
* **Confounds.** A stimulation is confounded only when movement (the camera's ``tail``
  labels, else the decoder's) overlaps its own baseline or response window
  (``stim.responses.ResponseCollector``); its outcome is then kept without the neurons that
  movement drives (``stim.responses.MoverMap``), or weighted by ``confounded_weight``.
* **Stopping.** Every mapped marginal outside [eps, 1 - eps], ``max_stims``, or the next
  test's expected information below ``stop_info_bits``; ``stims_to_go`` estimates the
  stimulations still needed.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from rig.recording.files import atomic_write_bytes
from stim.design import RateLimiter, adaptive_ensemble, random_ensemble
from stim.gate import CAMERA, Gate
from stim.model import check_rates, test_weights
from stim.posterior import Q, StreamingPosterior, marginals_of
from stim.responses import MoverMap, ResponseCollector, ResponseWindow

class LoopSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The policy's settings (the ``[nodes.planner]`` table)."""

    k_expected: float = 5.0  # expected in-degree over the whole brain (prior)
    # Outcome error rates of the response detector below, not of the synapse: measured on the
    # simulated fish (2,000 neurons, GCaMP6s, 2 Hz, 50 targets) against its ground truth:
    # 0.051 false positives (its own spurious-response rate is 0.05), 0.31 misses.
    alpha: float = 0.06
    beta: float = 0.3
    ensemble_cap: int = 50  # most targets per ensemble (the SLM's max_targets; 50 x 5 mW)
    design: str = "random"  # "random" (spread by the rate limit) or "adaptive" (information)
    power_mw: float = 5.0  # per target
    # between plans: at 2 Hz a stimulation's frames (baseline, landing, next) end before the
    # next one's baseline (offline, 120 s: precision/recall 0.97/0.95, at 2 s 0.92/0.92)
    min_interval_s: float = 1.5
    max_rate_hz_per_neuron: float = 0.2  # the SLM's safety limit
    population: str = "pretectum"  # region to map (from `anatomy`), or "all"
    population_size: int = 0  # neurons mapped; 0: duration_s * resolve_rate_hz of the region
    # Neurons a second of run resolves: on the simulated fish (2,000 neurons, 2 Hz, the rates
    # below) 96 pretectal neurons in 120 s reach precision/recall 0.98/0.96 offline (the
    # loop of tests/test_stim_loop.py), 160 reach 0.93/0.91.
    resolve_rate_hz: float = 0.8
    quiet_s: float = 0.5  # camera time without a bout before a stimulation
    quiet_frames: int = 1  # decoded frames without movement (decoder gate)
    max_camera_age_s: float = 1.0  # the camera's newest frame may lag the imaging frame this much
    max_report_lag_frames: int = 8  # movement reports older than this are ignored
    plan_timeout_s: float = 5.0  # a plan not fired by then is given up
    baseline_frames: int = 1
    delay_frames: int = 0
    response_frames: int = 2
    threshold: float = 0.35  # peak dF/F rise that counts as a response
    z: float = 0.0  # ... and in baseline standard deviations (0: threshold only)
    # A stimulation during a bout: its outcome without the neurons movement drives (learned
    # from the labels; "movers"), or weighted by confounded_weight ("weight"; 0: discarded).
    # On the simulated fish (offline, 120 s, 96 neurons) about half the stimulations are
    # confounded: precision/recall 0.98/0.96 with "movers", 0.81/0.68 discarding them.
    confounds: str = "movers"
    confounded_weight: float = 0.0
    mover_margin: float = 0.1  # dF/F: a mover's mean rise with movement over without
    stop_eps: float = 0.01  # stopping rule: every mapped marginal outside [eps, 1 - eps]
    stop_info_bits: float = 0.0  # ... or the next test's expected information below this
    max_stims: int = 0  # stop after this many (0: no limit)
    publish_every_s: float = 0.5
    matrix_neurons: int = 200  # marginals block sent to the dashboard
    seed: int = -1  # -1: the run's seed

    def __post_init__(self):
        check_rates(self.alpha, self.beta)  # any alpha, beta > 0 with alpha + beta < 1
        if self.confounds not in ("movers", "weight"):
            raise ValueError(f"planner.confounds={self.confounds!r}: use 'movers' or 'weight'")
        if self.design not in ("adaptive", "random"):
            raise ValueError(f"planner.design={self.design!r}: use 'adaptive' or 'random'")
        if self.ensemble_cap < 1 or self.population_size < 0:
            raise ValueError("planner.ensemble_cap must be >= 1 and population_size >= 0")
        if not self.resolve_rate_hz > 0:
            raise ValueError(f"planner.resolve_rate_hz={self.resolve_rate_hz}: must be > 0")


@dataclass
class Decision:
    """What the gate decided at one imaging frame."""

    targets: np.ndarray | None  # (K,) int32 to fire, or None
    reason: str  # "plan", "moving", "camera stale", "interval", "outstanding", "stopped", ...

    @property
    def gated(self) -> bool:
        """A stimulation was due, so the gate was asked (latency counts these)."""
        return self.reason not in ("no frames", "stopped", "outstanding", "interval",
                                   "baseline")


class MappingLoop:
    """The policy's state; see the module docstring.

    Parameters
    ----------
    settings : LoopSettings.
    seed : the run's seed (used when ``settings.seed`` is -1).
    duration_s : the run's length, s (0: unknown), for sizing the population.
    """

    def __init__(self, settings: LoopSettings, seed: int = 0, duration_s: float = 0.0):
        s = self.s = settings
        self.window = ResponseWindow(s.baseline_frames, s.delay_frames, s.response_frames,
                                     s.threshold, s.z, s.confounded_weight)
        self.rng = np.random.default_rng(seed if s.seed < 0 else s.seed)
        self.duration_s = float(duration_s)
        self.gate = Gate(s)
        self.post: StreamingPosterior | None = None  # built at the first frame (N known)
        self.regions = self.region_names = None
        self.presyn = None
        self.mapped = None  # (M,) int32 ids stimulated
        self.why = ""
        self.newest_frame, self.newest_t = -1, 0
        self.outstanding = None  # (targets, t_planned)
        self.last_plan_s = -math.inf
        self.stopped, self.stop_reason = False, ""
        self.n_confounded = self.n_outcomes = self.n_fired = 0
        self.counts = {"plans": 0, "withheld_moving": 0, "withheld_stale": 0, "timed_out": 0}
        self.history: list[dict] = []  # (time, stims, precision, recall) as they evolve
        self._cache_key, self._cache = None, None
        self._refreshed_at = -1

    # -- inputs ---------------------------------------------------------------------------
    def set_anatomy(self, regions: np.ndarray, region_names) -> None:
        """Regions of the imaged neurons: before the first frame, fixes the population and
        builds the posterior (N x N: seconds at N = 10,000, better before frames come)."""
        if self.post is None:
            self.regions, self.region_names = np.asarray(regions), list(region_names)
            self._build(len(self.regions))

    def set_truth(self, presyn: np.ndarray) -> None:
        """The simulator's true presynaptic partners (N, k), for scoring only."""
        self.presyn = np.asarray(presyn, dtype=np.int64)
        self._cache_key = None

    def add_frame(self, frame: int, t_acq_ns: int, dff: np.ndarray) -> bool:
        """One imaging frame's dF/F (N,); False (and ignored) when N changed. Outcomes it
        completes are folded in by ``absorb``: call it after ``decide``, so no posterior
        update (nor its periodic full refresh) delays the decision."""
        if self.post is None:
            self._build(len(dff))
        elif len(dff) != self.post.n:
            return False
        self.collector.add_frame(frame, dff)
        if frame >= self.newest_frame:
            self.newest_frame, self.newest_t = frame, int(t_acq_ns)
        return True

    def add_camera(self, frame: int, t_ns: int, moving: bool) -> bool:
        """One camera frame (``behaviour``): gate input. False when not believed."""
        if not self.gate.near(frame, self.newest_frame):
            return False
        self.gate.camera(int(t_ns), bool(moving), self.newest_t)
        return True

    def add_movement(self, source: str, frame: int, moving: bool) -> bool:
        """Movement over one imaging frame: ``camera`` (``tail``) or ``decoder`` (``decoded``).
        The camera's reports mark confounds; the decoder's gate and confound only where no
        camera has reported. False when not believed or not used."""
        if self.post is None or (source != CAMERA and self.gate.source == CAMERA):
            return False  # the camera gates: the decoder's (late) reports are not needed
        if not self.gate.near(frame, self.newest_frame):
            return False
        if source == CAMERA:
            self.gate.source = CAMERA
        else:
            self.gate.decoded(frame, moving)
        self.collector.wait_movement = True
        self.collector.set_moving(frame, moving)
        self.absorb()
        return True

    def fired(self, frame: int, targets, now_s: float) -> None:
        """A stimulation fired after imaging frame ``frame``: it lands in the next one."""
        targets = np.asarray(targets, dtype=np.int32)
        self.collector.add_stim(frame + 1, targets)
        self.rates.record(targets, now_s)
        self.outstanding = None
        self.n_fired += 1

    # -- decisions ------------------------------------------------------------------------
    def decide(self, now_s: float) -> Decision:
        """At an imaging frame: stimulate now (the targets), or why not."""
        s = self.s
        if self.post is None:
            return Decision(None, "no frames")
        if s.max_stims and self.n_fired >= s.max_stims:
            self.stop(f"max_stims {s.max_stims}")
        if self.stopped:  # (the stopping rule itself is checked off this path, by absorb)
            return Decision(None, "stopped")
        if self.outstanding is not None:
            if now_s - self.outstanding[1] <= s.plan_timeout_s:
                return Decision(None, "outstanding")
            self.counts["timed_out"] += 1
            self.outstanding = None
        if now_s - self.last_plan_s < s.min_interval_s:
            return Decision(None, "interval")
        if self.newest_frame < s.baseline_frames:
            return Decision(None, "baseline")  # no frames before it yet: no outcome
        why = self.gate.quiet(self.newest_frame, self.newest_t)
        if why:
            self.counts["withheld_stale" if why == "camera stale" else "withheld_moving"] += 1
            return Decision(None, why)
        eligible = self.rates.eligible(now_s) & self._in_pop
        if eligible.sum() < self.size:
            return Decision(None, "rate limit")
        if s.design == "adaptive" and self.post.n_tests >= 10:
            targets, info = adaptive_ensemble(self.post, self.rng, self.size, eligible)
            if info / math.log(2) < s.stop_info_bits:
                self.stop(f"next test's expected information {info / math.log(2):.3g} bits "
                          f"< {s.stop_info_bits}")
                return Decision(None, "stopped")
        else:
            targets = random_ensemble(self.rng, self.size, eligible)
        self.outstanding = (targets, now_s)
        self.last_plan_s = now_s
        self.counts["plans"] += 1
        return Decision(targets, "plan")

    def check_stop(self) -> None:
        """The stopping rule on the current posterior (N x M work: kept off ``decide``)."""
        s = self.s
        if self.stopped or self.post is None:
            return
        if self.n_outcomes >= 20 and self.derived()[1]["unsure"] == 0:
            self.stop(f"all mapped marginals outside [{s.stop_eps}, {1 - s.stop_eps}]")

    def stop(self, reason: str) -> None:
        if not self.stopped:
            self.stopped, self.stop_reason = True, reason

    # -- figures --------------------------------------------------------------------------
    def derived(self) -> tuple[dict, dict]:
        """Arrays and meta of the ``posterior`` message, recomputed only when the posterior
        (its version) or the truth changed."""
        p = self.post
        key = (p.version, self.presyn is not None)
        if key == self._cache_key:
            return self._cache
        lam = p.lam[self.mapped]  # (M, N) the mapped neurons' outgoing connections
        rows = marginals_of(lam)
        lo_q, hi_q = (int(round(math.log(e / (1 - e)) * Q)) for e in (self.s.stop_eps,
                                                                        1 - self.s.stop_eps))
        unsure_pairs = (lam > lo_q) & (lam < hi_q)
        unsure = int(np.count_nonzero(unsure_pairs))
        mean = float(rows.sum(dtype=np.float64))
        sd = float(np.sqrt((rows * (1 - rows)).sum(dtype=np.float64)))
        m = min(self.s.matrix_neurons, len(self.mapped))
        ids = self.mapped[:m]
        out_degree = np.zeros(p.n, np.float32)  # unmapped neurons: never stimulated, unknown
        out_degree[self.mapped] = rows.sum(axis=1)
        arrays = {"marginals": marginals_of(p.lam[np.ix_(ids, ids)]), "ids": ids,
                  "out_degree": out_degree,
                  "stim_count": p.stim_count.astype(np.int32),
                  "mapped": self.mapped.astype(np.int32)}
        meta = {"n_stims": int(p.n_tests), "mapped": int(len(self.mapped)),
                "confident_fraction": 1.0 - unsure / max(lam.size, 1), "unsure": unsure,
                "edges_mean": mean, "edges_ci95": [mean - 1.96 * sd, mean + 1.96 * sd],
                "stims_to_go": self.stims_to_go(lam, unsure_pairs)}
        if self.presyn is not None and len(self.presyn) == p.n:
            meta["precision"], meta["recall"] = population_score(p.lam, self.presyn, self.mapped)
        self._cache_key, self._cache = key, (arrays, meta)
        return self._cache

    def stims_to_go(self, lam: np.ndarray, unsure: np.ndarray) -> int:
        """Stimulations still expected before the stopping rule: each unsure connection
        drifts out of [eps, 1 - eps] at the mean log-odds step of one more stimulation of its
        presynaptic neuron (up if it leans to a connection, down if not); a mapped neuron
        needs as many as its slowest connection, and at least ``needed`` stimulations in
        all; ``size`` neurons per test.

        lam : (M, N) int16 log-odds codes of the mapped rows; unsure : (M, N) bool."""
        s, p = self.s, self.post
        c1, c0 = test_weights(s.alpha, s.beta)
        up = (1 - s.beta) * c1 + s.beta * c0  # a connection's mean step, nats
        down = -(s.alpha * c1 + (1 - s.alpha) * c0)  # a non-connection's
        edge = math.log((1 - s.stop_eps) / s.stop_eps)
        r, c = np.nonzero(unsure)
        x = lam[r, c].astype(np.float32) / np.float32(Q)
        steps = np.ceil(np.where(x > 0, (edge - x) / up, (x + edge) / down))
        # a neuron stimulated fewer than `needed` times has connections still hidden at the
        # prior (below eps): it needs at least the rest
        per_row = np.maximum(self.needed - p.stim_count[self.mapped], 0).astype(np.float64)
        np.maximum.at(per_row, r, steps)
        return int(math.ceil(per_row.sum() / self.size))

    def record(self, t_s: float) -> dict:
        """Append the current figures to ``history`` (precision/recall over time)."""
        meta = self.derived()[1]
        row = {"t_s": round(t_s, 2), "n_stims": meta["n_stims"],
               "stims_to_go": meta["stims_to_go"]}
        for k in ("precision", "recall"):
            if k in meta:
                row[k] = round(meta[k], 4)
        self.history.append(row)
        return row

    def summary(self) -> dict:
        """Closing figures for the run summary (the node adds its own)."""
        if self.post is None:
            return {}
        meta = self.derived()[1]
        out = {"mapped": self.why, "gate": self.gate.source,
               "stims": int(self.post.n_tests), "confounded": int(self.n_confounded),
               "stims_to_go": meta["stims_to_go"], "stop_reason": self.stop_reason,
               "plans": self.counts["plans"],
               "withheld (fish moving)": self.counts["withheld_moving"],
               "withheld (camera stale)": self.counts["withheld_stale"],
               "reports rejected (far frame)": self.gate.rejected}
        for k in ("precision", "recall"):
            if k in meta:
                out[k] = meta[k]
        return out

    def save(self, path) -> None:
        """Write the estimate (after a full refresh) to ``path`` (.npz), atomically: ``edges``
        (E, 2) int32 (pre, post) among the mapped neurons' outgoing connections, ``mapped``
        (M,), ``log_odds_q64`` (M, N) int16 (1/64 nat) of their rows, the tests (``members``,
        ``ksize``, ``outcomes``, ``weight``) and the model (``alpha``, ``beta``,
        ``k_expected``)."""
        p = self.post
        p.refresh()
        t = p.n_tests
        # only the mapped rows: the others were never stimulated (the prior), and the whole
        # N x N (200 MB at N = 10,000) would not be written within a node's stop time
        rows = p.lam[self.mapped]
        i, j = np.nonzero(rows > 0)  # marginal > 0.5
        edges = np.stack([self.mapped[i], p.post[j]], axis=1).astype(np.int32)
        buffer = io.BytesIO()  # written whole or not at all: a full disk keeps the last one
        np.savez_compressed(buffer, edges=edges, mapped=self.mapped, log_odds_q64=rows,
                            members=p.members[:t], ksize=p.ksize[:t], outcomes=p.ys[:t],
                            weight=p.weight[:t], alpha=p.alpha, beta=p.beta, k_expected=p.k)
        atomic_write_bytes(Path(path), buffer.getvalue())
        self._cache_key = None

    # -- internals ------------------------------------------------------------------------
    def _build(self, n: int) -> None:
        s = self.s
        self.mapped, self.why = self._choose_population(n)
        self._in_pop = np.zeros(n, bool)
        self._in_pop[self.mapped] = True
        self.post = StreamingPosterior(n, s.alpha, s.beta, s.k_expected, max_targets=self.size)
        self.collector = ResponseCollector(n, self.window)
        self.movers = MoverMap(n, s.mover_margin)
        self.rates = RateLimiter(n, s.max_rate_hz_per_neuron)

    def _choose_population(self, n: int) -> tuple[np.ndarray, str]:
        """The mapped neurons and a sentence saying which and why."""
        s = self.s
        self.needed = needed_stims(s.alpha, s.beta, s.k_expected, n, s.stop_eps)
        if s.population == "all" or self.regions is None or len(self.regions) != n:
            pool, where = np.arange(n), "all neurons" if s.population == "all" else \
                f"all neurons (no anatomy for region {s.population!r})"
        elif s.population in self.region_names:
            pool = np.flatnonzero(self.regions == self.region_names.index(s.population))
            where = s.population
        else:
            raise ValueError(f"planner.population={s.population!r}: not a region of the "
                             f"anatomy; use one of {self.region_names} or 'all'")
        # The SLM's per-neuron rate limit fixes how often any mapped neuron can be stimulated
        # (a neuron sits out 1 / (rate * interval) plans), whatever the population; a smaller
        # population then means smaller ensembles (size = M / (1 + that)), fewer partners
        # stimulated together and cleaner outcomes. How many neurons a second of run resolves
        # was measured: ``resolve_rate_hz``.
        wait = 1 / (s.max_rate_hz_per_neuron * s.min_interval_s) if s.min_interval_s > 0 else 0
        cap = s.population_size or (int(self.duration_s * s.resolve_rate_hz)
                                    if self.duration_s > 0 else len(pool))
        m = int(np.clip(cap, 2, len(pool)))
        self.size = max(1, min(s.ensemble_cap, m - 1, int(m / (1 + wait))))
        ids = np.sort(self.rng.choice(pool, size=m, replace=False)).astype(np.int32)
        why = f"{m} of {len(pool)} {where} neurons ({n} imaged), ensembles of {self.size}"
        if s.population_size:
            why += f": population_size {s.population_size}"
        elif self.duration_s > 0:
            why += (f": {s.resolve_rate_hz:g} neurons per second of run resolve at the SLM's "
                    f"{s.max_rate_hz_per_neuron:g} Hz per neuron and one ensemble per "
                    f"{s.min_interval_s:g} s")
        why += "; population = 'all' maps every neuron"
        return ids, why

    def absorb(self) -> None:
        """Fold every completed outcome into the posterior."""
        if self.post is None:
            return
        movers = None
        if self.s.confounds == "movers" and self.collector.pending:
            self.movers.fold(self.collector, self.collector.movement_known)
            movers = self.movers.movers()
        ready = self.collector.ready(movers)
        for _, targets, out in ready:
            self.n_confounded += out.confounded
            self.n_outcomes += 1
            self.post.update(targets, out.y, out.weight)
        if ready:
            self.check_stop()

    def refresh(self) -> None:
        """A full explaining-away refresh, if tests came since the last: the figures and the
        stopping rule then read the batch estimate, not the streamed one (on the simulated
        fish, 120 s: precision 0.68 streamed, 0.89 refreshed)."""
        p = self.post
        if p is not None and p.n_tests != self._refreshed_at:
            p.refresh()
            self._refreshed_at = p.n_tests


def needed_stims(alpha: float, beta: float, k: float, n: int, eps: float) -> float:
    """Stimulations of a presynaptic neuron that take a true connection from the prior
    (k / (n - 1)) to a marginal of 1 - eps, on average (log-odds drift per test)."""
    c1, c0 = test_weights(alpha, beta)
    drift = (1 - beta) * c1 + beta * c0
    rho = k / (n - 1)
    return math.ceil((math.log((1 - eps) / eps) - math.log(rho / (1 - rho))) / drift)


def population_score(lam: np.ndarray, presyn: np.ndarray, mapped: np.ndarray):
    """Precision and recall of the estimate (log-odds > 0) over the mapped neurons' outgoing
    connections, against the true partners ``presyn`` (N, k) of every neuron."""
    n = lam.shape[1]
    in_pop = np.zeros(lam.shape[0], bool)
    in_pop[mapped] = True
    pre = np.asarray(presyn, dtype=np.int64)
    cols = np.broadcast_to(np.arange(n)[:, None], pre.shape)
    true = in_pop[pre]
    tp = int(np.count_nonzero(lam[pre[true], cols[true]] > 0))
    pos = int(np.count_nonzero(lam[mapped] > 0))
    return tp / max(pos, 1), tp / max(int(true.sum()), 1)
