"""The connectivity-mapping node ``Planner``: ``stim.loop.MappingLoop`` on the bus.

Subscribes to ``traces``, ``behaviour`` (the camera's bout state per camera frame: the gate),
``tail`` (the camera's movement per imaging frame: confounds), ``decoded`` (meta ``moving``:
gate and confounds only where no camera runs), ``stim.fired``, ``anatomy`` (regions: the
mapped population) and ``sim.truth`` (scores). At each imaging frame it asks the policy
whether to stimulate and publishes ``stim.plan`` (``targets`` int32, ``power_mw`` float32;
frame and t_acq_ns of that imaging frame); the decision's latency since the frame's
acquisition is kept as ``gate.decision`` (its "since acquisition" row in the run summary).
A few times a second it publishes ``posterior``: meta ``n_stims``, ``mapped``,
``confident_fraction``, ``unsure``, ``edges_mean``, ``edges_ci95``, ``stims_to_go``, ``stop``,
``stop_reason``, ``confounded``, ``gate`` and, when the simulator's truth is known,
``precision``/``recall`` on the mapped population; arrays ``out_degree``, ``stim_count``
(N,), ``mapped`` (M,), and ``marginals`` for the first mapped neurons (``ids``). It stops
planning by the stopping rule, at ``max_stims``, or on STOP, and saves the estimate as
``RUN_DIR/connectivity.npz`` (and the figures over time as ``RUN_DIR/mapping.json``).
"""
from __future__ import annotations

import time

import msgspec
import numpy as np

from rig.messages import (ANATOMY, BEHAVIOUR, DECODED, POSTERIOR, SIM_TRUTH, STIM_FIRED, STIM_PLAN,
                          TAIL, TRACES)
from rig.node import Node, Verb
from rig.recording.files import atomic_write_bytes
from stim.design import warm_up
from stim.gate import CAMERA, DECODER
from stim.loop import LoopSettings, MappingLoop


class Planner(Node):
    """Online group-testing planner: design, time, decode."""

    Settings = LoopSettings
    subscribe = (TRACES, BEHAVIOUR, TAIL, DECODED, STIM_FIRED, ANATOMY, SIM_TRUTH)
    step_interval_s = None  # everything happens at an imaging frame

    def setup(self) -> None:
        self.loop = MappingLoop(self.settings, self.seed,
                                float(self.spec.extra.get("duration_s") or 0.0))
        self.next_publish = 0.0
        self.t_ready_ns = 0  # when the posterior was built (wall clock, ns)
        self.t_first = None  # first imaging frame (monotonic s): the figures' time axis
        self.saved_tests = -1
        self.last_meta: dict = {}
        warm_up()  # load the numba kernels now, not at the first stimulation

    def on_message(self, msg) -> None:
        loop = self.loop
        if loop.post is None and msg.topic in (TRACES, ANATOMY):
            self.t_ready_ns = 2 ** 63  # the posterior is built at this message: ready after
        self._route(msg)
        if self.t_ready_ns == 2 ** 63 and loop.post is not None:
            self.t_ready_ns = time.time_ns()

    def _route(self, msg) -> None:
        loop = self.loop
        if msg.topic == TRACES:
            if not loop.add_frame(msg.frame, msg.t_acq_ns, msg["dff"]):
                self.counters["bad_traces"] += 1
                return
            if self.t_first is None:
                self.t_first = time.monotonic()
            self._decide(msg.frame, msg.t_acq_ns)
        elif msg.topic == BEHAVIOUR:
            loop.add_camera(msg.frame, msg.t_acq_ns, bool(msg.meta.get("moving", True)))
        elif msg.topic in (TAIL, DECODED):
            # no flag from the camera: a lost trace, counted as moving
            moving = bool(msg.meta.get("moving", msg.topic == TAIL))
            loop.add_movement(CAMERA if msg.topic == TAIL else DECODER, msg.frame, moving)
        elif msg.topic == STIM_FIRED and loop.post is not None:
            loop.fired(msg.frame, msg["targets"], time.monotonic())
            self.counters["fired"] += 1
        elif msg.topic == ANATOMY and "regions" in msg.arrays:
            # the population and the posterior (N x N) are built now, before the first frame
            loop.set_anatomy(msg["regions"], msg.meta.get("region_names", []))
        elif msg.topic == SIM_TRUTH and "presyn" in msg.arrays:
            loop.set_truth(msg["presyn"])

    def _decide(self, frame: int, t_acq_ns: int) -> None:
        """Decide first; then the work that may wait: outcomes, the ``posterior`` message, and
        right after a plan (no stimulation is due for ``min_interval_s`` then) a full refresh."""
        loop = self.loop
        if self.running:
            d = loop.decide(time.monotonic())
            if d.gated and t_acq_ns > self.t_ready_ns:
                # a stimulation was due: how long the frame waited for the gate (frames
                # acquired while the posterior was being built, ~2 s at N = 10,000, excluded)
                self.latency["gate.decision"]["age"].add(time.time_ns() - t_acq_ns)
            if d.targets is not None:
                power = np.full(len(d.targets), self.settings.power_mw, dtype=np.float32)
                self.publish(STIM_PLAN, {"targets": d.targets, "power_mw": power},
                             {"design": self.settings.design}, frame=frame, t_acq_ns=t_acq_ns)
                loop.refresh()
        loop.absorb()
        now = time.monotonic()
        if now >= self.next_publish:
            self.next_publish = now + self.settings.publish_every_s
            self._publish_posterior(now)
        if loop.stopped and self.saved_tests < 0:  # stopped since the last frame
            self.log.info("mapping stopped: %s after %d stimulations", loop.stop_reason,
                          loop.post.n_tests)
            self._save()

    def _publish_posterior(self, now: float) -> None:
        loop = self.loop
        arrays, derived = loop.derived()
        loop.record(now - self.t_first)
        meta = {**derived, "stop": bool(loop.stopped), "stop_reason": loop.stop_reason,
                "confounded": int(loop.n_confounded), "gate": loop.gate.source}
        self.publish(POSTERIOR, arrays, meta, frame=loop.newest_frame,
                     t_acq_ns=loop.newest_t)
        self.last_meta = meta

    def on_control(self, verb, args) -> None:
        if verb is Verb.STOP and self.loop.post is not None:
            self.loop.stop("stop command")
            self._save()

    def _save(self) -> None:
        self.loop.save(self.run_dir / "connectivity.npz")
        atomic_write_bytes(self.run_dir / "mapping.json", msgspec.json.encode(
            {"summary": self.loop.summary(), "history": self.loop.history}))  # refreshed
        self.saved_tests = self.loop.post.n_tests
        self.log.info("connectivity estimate saved: %d stimulations", self.saved_tests)

    def teardown(self) -> None:
        # outcomes of stimulations already fired keep arriving after a stop: save them too
        if self.loop.post is not None and self.saved_tests != self.loop.post.n_tests:
            self._save()

    def stats(self) -> dict:
        loop = self.loop
        if loop.post is None:
            return {}
        scores = {k: self.last_meta[k] for k in ("precision", "recall", "stims_to_go")
                  if k in self.last_meta}
        return {"n_stims": int(loop.post.n_tests), "stopped": bool(loop.stopped),
                "confounded": int(loop.n_confounded), "gate": loop.gate.source, **scores}

    def summary(self) -> dict:
        out = self.loop.summary()
        if self.loop.history:
            out["precision/recall over time"] = " ".join(
                f"{r['t_s']:.0f}s:{r.get('precision', float('nan')):.2f}/"
                f"{r.get('recall', float('nan')):.2f}"
                for r in self.loop.history[:: max(1, len(self.loop.history) // 6)])
        return out
