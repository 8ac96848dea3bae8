"""The connectivity-mapping node ``Planner``: which ensemble next (``stim.slm_node`` fires it).

``Planner`` subscribes to ``traces``, ``decoded`` (meta ``moving``), ``stim.fired`` and
``sim.truth``. While running and not stopped it designs the next ensemble from the current
posterior (``stim.design``), waits for decoded quiescence, and publishes ``stim.plan``
(``targets`` int32, ``power_mw`` float32; frame and t_acq_ns of the newest frame it had).
The traces around each fired stimulation become an outcome vector (``stim.responses``) that
updates the posterior (``stim.posterior``); stimulations during a decoded bout are flagged
and down-weighted (weight 0 by default: discarded). Movement reports (``decoded``, ``tail``)
come after their frame's traces, so once any has arrived an outcome also waits for the
movement of its last window frame, and quiescence is judged up to the newest frame whose
movement is known (``stim.responses.ResponseCollector``). A few times a second it publishes
``posterior`` for the dashboard: meta ``n_stims``, ``confident_fraction``, ``unsure``,
``edges_mean``, ``edges_ci95``, ``stop``, ``stop_reason``, ``confounded`` and, when the
simulator's ``sim.truth`` ``presyn`` is known, ``precision``/``recall``; arrays
``out_degree`` and ``stim_count`` (N,), and ``marginals`` (M, M) for the first M neurons.
It stops planning by the stopping rule, at ``max_stims``, or on STOP, and saves the estimate
as ``RUN_DIR/connectivity.npz``.
"""
from __future__ import annotations

import io
import time

import msgspec
import numpy as np

from rig.node import Node, Verb
from rig.recording.files import atomic_write_bytes


class Planner(Node):
    """Online group-testing planner: design, time, decode."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        k_expected: float = 5.0  # expected in-degree (prior)
        # outcome error rates of the response detector, not of the synapse: measured on the
        # simulated fish (2,000 neurons, GCaMP6s, 2 Hz) with the default window below:
        # 0.05 false positives, 0.38 false negatives against its ground truth
        alpha: float = 0.05
        beta: float = 0.38
        ensemble_cap: int = 10  # most targets per ensemble (the SLM's)
        design: str = "adaptive"  # "adaptive" (expected information) or "random"
        power_mw: float = 5.0  # per target
        min_interval_s: float = 2.0  # between plans (>= the SLM's safety min_interval_s)
        max_rate_hz_per_neuron: float = 0.1  # never re-plan a neuron faster than this
        quiet_frames: int = 2  # decoded frames without movement before a stimulation
        plan_timeout_s: float = 5.0  # a plan not fired by then is given up
        baseline_frames: int = 3
        delay_frames: int = 0
        response_frames: int = 2
        threshold: float = 0.2  # dF/F rise that counts as a response
        z: float = 3.0  # ... and in baseline standard deviations
        confounded_weight: float = 0.0  # weight of a stimulation during a bout (0: discard)
        stop_eps: float = 0.01  # stopping rule: every marginal outside [eps, 1 - eps]
        stop_info_bits: float = 0.0  # ... or the next test's expected information below this
        max_stims: int = 0  # stop after this many (0: no limit)
        publish_every_s: float = 0.5
        matrix_neurons: int = 200  # marginals block sent to the dashboard
        seed: int = -1  # -1: the run's seed

    subscribe = ("traces", "decoded", "tail", "stim.fired", "sim.truth")
    step_interval_s = 0.05

    def setup(self) -> None:
        s = self.settings
        if s.design not in ("adaptive", "random"):
            raise ValueError(f"planner.design={s.design!r}: use 'adaptive' or 'random'")
        from stim.responses import ResponseWindow

        self.window = ResponseWindow(s.baseline_frames, s.delay_frames, s.response_frames,
                                     s.threshold, s.z, s.confounded_weight)
        self.rng = np.random.default_rng(self.seed if s.seed < 0 else s.seed)
        self.post = None  # built at the first traces message, when N is known
        self.presyn = None
        self.last_frame, self.last_t_acq = -1, 0
        self.moving_until = -1  # last frame with movement, decoded or observed
        self.withholding = False  # a due stimulation is being withheld while the fish moves
        self.quiet_since = None
        self.outstanding = None  # (targets, t_planned)
        self.last_plan_s = -np.inf
        self.next_publish = 0.0
        self.stopped, self.stop_reason = False, ""
        self.n_confounded = 0
        self.saved_tests = -1  # n_tests when the estimate was last saved
        self.last_meta = {}
        self._cache_key, self._cache = None, None  # posterior-derived arrays and meta
        from stim.design import warm_up

        warm_up()  # load the numba kernels now, not at the first stimulation

    def _build(self, n: int) -> None:
        from stim.design import RateLimiter
        from stim.posterior import StreamingPosterior
        from stim.responses import ResponseCollector

        s = self.settings
        self.n = n
        self.size = min(s.ensemble_cap, n - 1)
        self.post = StreamingPosterior(n, s.alpha, s.beta, s.k_expected, max_targets=self.size)
        self.collector = ResponseCollector(n, self.window)
        self.rates = RateLimiter(n, s.max_rate_hz_per_neuron)
        self.log.info("planner: %d neurons, ensembles of %d, %s design", n, self.size, s.design)

    def on_message(self, msg) -> None:
        if msg.topic == "traces":
            dff = msg["dff"]
            if self.post is None:
                self._build(len(dff))
            elif len(dff) != self.n:
                self.counters["bad_traces"] += 1
                return
            self.collector.add_frame(msg.frame, dff)
            self.last_frame, self.last_t_acq = msg.frame, msg.t_acq_ns
            self._absorb()
        elif msg.topic in ("decoded", "tail") and self.post is not None:
            # Decoded movement, and the camera's observed movement over the frame's exposure
            # (a lost trace counts as moving): either one withholds stimulation.
            moving = bool(msg.meta.get("moving", msg.topic == "tail"))
            self.collector.wait_movement = True  # a movement source exists: outcomes wait
            self.collector.set_moving(msg.frame, moving)
            if moving:
                self.moving_until = max(self.moving_until, msg.frame)
            self._absorb()  # the last response frame's movement may complete an outcome
        elif msg.topic == "stim.fired" and self.post is not None:
            targets = np.array(msg["targets"], dtype=np.int32)
            self.collector.add_stim(msg.frame, targets)
            self.rates.record(targets, time.monotonic())
            self.outstanding = None
            self.counters["fired"] += 1
        elif msg.topic == "sim.truth" and "presyn" in msg.arrays:
            self.presyn = np.array(msg["presyn"], dtype=np.int64)

    def _absorb(self) -> None:
        for _, targets, out in self.collector.ready():
            self.n_confounded += out.confounded
            self.post.update(targets, out.y, out.weight)
            self.counters["outcomes"] += 1

    def _quiescent(self) -> bool:
        """Quiet for ``quiet_frames`` up to the newest frame whose movement is known (the
        newest traces frame when no decoder or camera reports movement)."""
        c = self.collector
        known = c.movement_known if c.wait_movement else self.last_frame
        return known - self.moving_until >= self.settings.quiet_frames

    def step(self) -> None:
        if self.post is None:
            return
        now = time.monotonic()
        s = self.settings
        if not self.stopped:
            self._check_stop()
        if not self.stopped:
            if self.outstanding is not None and now - self.outstanding[1] > s.plan_timeout_s:
                self.counters["plans_timed_out"] += 1
                self.outstanding = None
            if self.outstanding is None and now - self.last_plan_s >= s.min_interval_s:
                if self._quiescent():
                    self._plan(now)
                    self.withholding = False
                elif not self.withholding:  # count each due stimulation withheld, once
                    self.withholding = True
                    self.counters["withheld_moving"] += 1
        if now >= self.next_publish:
            self.next_publish = now + s.publish_every_s
            self._publish_posterior()

    def _plan(self, now: float) -> None:
        from stim.design import adaptive_ensemble, random_ensemble

        eligible = self.rates.eligible(now)
        if eligible.sum() < self.size:
            return  # everyone was stimulated too recently: wait
        if self.settings.design == "adaptive" and self.post.n_tests >= 10:
            targets, info = adaptive_ensemble(self.post, self.rng, self.size, eligible)
            bits = info / np.log(2)
            if bits < self.settings.stop_info_bits:
                self.stopped = True
                self.stop_reason = f"next test's expected information {bits:.3g} bits < " \
                                   f"{self.settings.stop_info_bits}"
                self.log.info("mapping stopped: %s", self.stop_reason)
                self._save()
                return
        else:
            targets = random_ensemble(self.rng, self.size, eligible)
        power = np.full(len(targets), self.settings.power_mw, dtype=np.float32)
        self.publish("stim.plan", {"targets": targets, "power_mw": power},
                     {"design": self.settings.design}, frame=self.last_frame,
                     t_acq_ns=self.last_t_acq)
        self.outstanding = (targets, now)
        self.last_plan_s = now
        self.counters["plans"] += 1

    def _check_stop(self) -> None:
        s = self.settings
        if s.max_stims and self.post.n_tests >= s.max_stims:
            self.stopped, self.stop_reason = True, f"max_stims {s.max_stims}"
        elif self.post.n_tests >= 20 and self._derived()[1]["unsure"] == 0:
            self.stopped, self.stop_reason = True, f"all marginals outside [{s.stop_eps}, " \
                                                   f"{1 - s.stop_eps}]"
        if self.stopped:
            self.log.info("mapping stopped: %s after %d stimulations", self.stop_reason,
                          self.post.n_tests)
            self._save()

    def _derived(self) -> tuple[dict, dict]:
        """Arrays and meta computed from the whole posterior (N x J passes), recomputed only
        when the posterior (its version) or the ground truth changed."""
        from stim.model import score

        p = self.post
        key = (p.version, self.presyn is not None)
        if key == self._cache_key:
            return self._cache
        pi = p.marginals()
        summary = p.summary(self.settings.stop_eps, pi)
        m = min(self.settings.matrix_neurons, p.n)
        arrays = {"marginals": pi[:m, :m].astype(np.float32),
                  "ids": np.arange(m, dtype=np.int32),
                  "out_degree": pi.sum(axis=1).astype(np.float32),
                  "stim_count": p.stim_count.astype(np.int32)}
        meta = {"n_stims": int(p.n_tests),
                "confident_fraction": float(summary["confident_fraction"]),
                "unsure": int(summary["unsure"]), "edges_mean": float(summary["edges_mean"]),
                "edges_ci95": [float(v) for v in summary["edges_ci95"]]}
        if self.presyn is not None and len(self.presyn) == self.n:
            meta["precision"], meta["recall"] = score(p.lam, self.presyn)
        self._cache_key, self._cache = key, (arrays, meta)
        return self._cache

    def _publish_posterior(self) -> None:
        arrays, derived = self._derived()
        meta = {**derived, "stop": bool(self.stopped), "stop_reason": self.stop_reason,
                "confounded": int(self.n_confounded)}
        self.publish("posterior", arrays, meta, frame=self.last_frame,
                     t_acq_ns=self.last_t_acq)
        self.last_meta = meta

    def on_control(self, verb, args) -> None:
        if verb is Verb.STOP and self.post is not None:
            self.stopped = True
            self.stop_reason = self.stop_reason or "stop command"
            self._save()

    def _save(self) -> None:
        if self.post is None:
            return
        p = self.post
        p.refresh()
        t = p.n_tests
        edges = p.estimate()
        buffer = io.BytesIO()  # written whole or not at all: a full disk keeps the last one
        np.savez_compressed(buffer, edges=edges,
                            log_odds_q64=p.lam, members=p.members[:t], ksize=p.ksize[:t],
                            outcomes=p.ys[:t], weight=p.weight[:t], alpha=p.alpha, beta=p.beta,
                            k_expected=p.k)
        atomic_write_bytes(self.run_dir / "connectivity.npz", buffer.getvalue())
        self.saved_tests = t
        self.log.info("connectivity estimate saved: %d edges, %d stimulations", len(edges), t)

    def teardown(self) -> None:
        # outcomes of stimulations already fired keep arriving after a stop: save them too
        if self.post is not None and self.saved_tests != self.post.n_tests:
            self._save()

    def stats(self) -> dict:
        if self.post is None:
            return {}
        scores = {k: self.last_meta[k] for k in ("precision", "recall") if k in self.last_meta}
        return {"n_stims": int(self.post.n_tests), "stopped": bool(self.stopped),
                "confounded": int(self.n_confounded), **scores}

    def summary(self) -> dict:
        return {**self.stats(), "stop_reason": self.stop_reason,
                "plans": int(self.counters["plans"]),
                "stims withheld (fish moving)": int(self.counters["withheld_moving"])}
