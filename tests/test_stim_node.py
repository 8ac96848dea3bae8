"""The Planner and SLM nodes, driven in-process with a tiny OR-channel 'fish'."""
import time

import numpy as np
import pytest

from rig.bus import Endpoints
from rig.messages import Message
from rig.node import NodeSpec, Verb, sign_control
from stim.model import random_partners
from stim.node import Planner
from stim.slm_node import SLM


class Collect:
    """Stands in for the node's publisher: keeps what would go on the bus."""

    def __init__(self):
        self.sent = []

    def publish(self, topic, arrays=None, meta=None, frame=-1, t_acq_ns=0):
        self.sent.append(Message(topic, dict(arrays or {}), dict(meta or {}), frame, t_acq_ns))

    def take(self, topic):
        out = [m for m in self.sent if m.topic == topic]
        self.sent = [m for m in self.sent if m.topic != topic]
        return out


def make(cls, name, tmp_path, **settings):
    spec = NodeSpec(name, f"{cls.__module__}:{cls.__name__}", settings, Endpoints("", "", ""),
                    str(tmp_path), seed=1)
    pub = Collect()
    node = cls(spec, pub)
    node.setup()
    node.running = True
    return node, pub


PLANNER = dict(k_expected=2, alpha=0.05, beta=0.05, ensemble_cap=5, design="random",
               min_interval_s=0.0, population="all", threshold=0.2, quiet_s=1.5,
               max_rate_hz_per_neuron=1e6, quiet_frames=1, publish_every_s=0.0,
               baseline_frames=2, response_frames=2, max_camera_age_s=1.5)
SLM_OK = dict(max_targets=10, min_interval_s=0.0, max_rate_hz_per_neuron=1e6,
              device_settings={"shape": [64, 64]})


class TinyFish:
    """N neurons, in-degree 2; a stimulation at frame f makes the partners' targets rise by
    1 dF/F over frames f+1 and f+2 (5% false negatives, 5% false positives)."""

    def __init__(self, n=30, seed=0):
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.post, self.presyn = random_partners(n, 2, self.rng)
        self.boost = {}

    def stimulate(self, targets, frame):
        in_s = np.zeros(self.n, bool)
        in_s[targets] = True
        hit = in_s[self.presyn].any(axis=1)
        u = self.rng.random(self.n)
        resp = np.where(hit, u >= 0.05, u < 0.05) & ~in_s
        for f in (frame + 1, frame + 2):
            self.boost[f] = self.boost.get(f, 0) + resp

    def frame(self, f):
        return (self.rng.normal(0, 0.02, self.n) + self.boost.pop(f, 0)).astype(np.float32)


def run_loop(planner, ppub, slm, spub, fish, frames, moving=lambda f: False):
    planner.on_message(Message("sim.truth", {"presyn": fish.presyn.astype(np.int32)}))
    for f in range(frames):
        planner.on_message(Message("traces", {"dff": fish.frame(f)}, {}, f, 1000 + f))
        planner.on_message(Message("decoded", {"pred": np.zeros(2, np.float32)},
                                   {"moving": moving(f)}, f, 1000 + f))
        for plan in ppub.take("stim.plan"):
            slm.on_message(plan)
        for fired in spub.take("stim.fired"):
            fish.stimulate(fired["targets"], fired.frame)
            planner.on_message(fired)


def test_planner_and_slm_map_a_small_circuit(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    fish = TinyFish()
    run_loop(planner, ppub, slm, spub, fish, frames=1500)
    post = ppub.take("posterior")[-1]
    assert post.meta["stop"] and "marginals outside" in post.meta["stop_reason"]
    assert post.meta["precision"] >= 0.9 and post.meta["recall"] >= 0.9
    assert post.meta["stims_to_go"] == 0 and post.meta["gate"] == "decoder"
    assert (tmp_path / "connectivity.npz").exists()
    assert post["out_degree"].shape == (30,) and post["marginals"].shape == (30, 30)
    assert slm.summary()["fired"] == planner.counters["fired"]


def test_plans_carry_the_frame_time_and_safe_sizes(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 6, running=False)  # builds the posterior
    planner.running = True
    t_acq = time.time_ns()  # acquired after the planner was ready: its latency counts
    planner.on_message(Message("traces", {"dff": fish.frame(7)}, {}, 7, t_acq))
    plan, = ppub.take("stim.plan")  # decided at the frame, without waiting for a step
    assert plan.frame == 7 and plan.t_acq_ns == t_acq
    assert plan["targets"].dtype == np.int32 and plan["power_mw"].dtype == np.float32
    assert len(plan["targets"]) == 5
    assert planner.latency["gate.decision"]["age"].n == 1


def _frame(planner, fish, f, running=True):
    planner.running = running
    planner.on_message(Message("traces", {"dff": fish.frame(f)}, {}, f, 10**9 * (f + 1)))


def test_no_plan_while_the_fish_is_decoded_moving(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 0, running=False)
    _frame(planner, fish, 1, running=False)
    planner.on_message(Message("decoded", {}, {"moving": True}, 1, 1))
    _frame(planner, fish, 2)
    assert ppub.take("stim.plan") == []
    assert planner.summary()["withheld (fish moving)"] == 1


def _camera(planner, frame, t_s, moving):
    planner.on_message(Message("behaviour", {}, {"moving": moving}, frame, int(t_s * 1e9)))


def test_the_camera_gates_and_the_decoder_is_then_ignored(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 0, running=False)
    _camera(planner, 0, 1.9, True)  # a bout at 1.9 s, camera time
    planner.on_message(Message("decoded", {}, {"moving": False}, 0, 1))
    _frame(planner, fish, 1)  # frame 1 acquired at 2 s: quiet for 0.1 s < quiet_s 1.5 s
    assert ppub.take("stim.plan") == []
    _camera(planner, 1, 3.45, False)  # quiet for 1.55 s
    _frame(planner, fish, 2)
    assert len(ppub.take("stim.plan")) == 1
    assert planner.summary()["gate"] == "camera"


def test_a_stale_camera_holds_the_gate_shut(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 0, running=False)
    _camera(planner, 0, 0.1, False)
    for f in range(1, 4):  # imaging goes on, the camera says nothing more
        _frame(planner, fish, f)
    assert ppub.take("stim.plan") == []
    assert planner.summary()["withheld (camera stale)"] >= 1


@pytest.mark.parametrize("moving", [True, False])
def test_a_report_for_a_far_frame_does_not_own_the_gate(tmp_path, moving):
    """Finding 7: one forged `tail`/`behaviour` at frame 1e9 must neither stop stimulation
    for good (moving) nor open the gate during movement (quiet)."""
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 0, running=False)
    planner.on_message(Message("tail", {}, {"moving": moving}, 10**9, 1))
    _camera(planner, 10**9, 10**9, moving)
    planner.on_message(Message("decoded", {}, {"moving": moving}, 10**9, 1))
    assert planner.summary()["reports rejected (far frame)"] == 3
    _camera(planner, 0, 0.0, True)  # the genuine camera: a bout at 0 s ...
    _frame(planner, fish, 1)  # ... so no plan at 2 s
    assert ppub.take("stim.plan") == []
    _camera(planner, 1, 1.99, False)
    _frame(planner, fish, 2)  # quiet for 2 s: the forged quiet/moving changed nothing
    assert len(ppub.take("stim.plan")) == 1


def _stim_with_camera_bout(tmp_path, bout_frame):
    """Frames 0..9 with the camera's per-frame labels, one stimulation fired after frame 4
    (it lands in 5), and a bout in ``bout_frame``; returns (outcomes, confounded)."""
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    planner.running = False  # no plans: the stimulation is injected
    fish = TinyFish()
    for f in range(10):
        planner.on_message(Message("traces", {"dff": fish.frame(f)}, {}, f, f))
        planner.on_message(Message("tail", {}, {"moving": f == bout_frame}, f, f))
        if f == 4:
            planner.on_message(Message("stim.fired", {"targets": np.array([1, 2], np.int32)},
                                       {}, 4, 4))
    return planner.loop.n_outcomes, planner.loop.n_confounded


def test_a_camera_bout_outside_the_windows_does_not_confound(tmp_path):
    # window of the stimulation landing in 5: baseline 3..4, response 5..6
    assert _stim_with_camera_bout(tmp_path, 2) == (1, 0)
    assert _stim_with_camera_bout(tmp_path, 7) == (1, 0)


@pytest.mark.parametrize("bout_frame", [3, 4, 5, 6])
def test_a_camera_bout_inside_the_windows_confounds(tmp_path, bout_frame):
    assert _stim_with_camera_bout(tmp_path, bout_frame) == (1, 1)


def test_outcomes_during_a_bout_are_flagged_and_discarded(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path,
                         **{**PLANNER, "quiet_frames": 0, "confounds": "weight"})
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    fish = TinyFish()
    run_loop(planner, ppub, slm, spub, fish, frames=60, moving=lambda f: True)
    lam = planner.loop.post.lam
    assert planner.loop.n_confounded >= 5
    assert planner.loop.n_confounded == planner.loop.post.n_tests
    off = lam != -32768
    assert np.all(lam[off] == lam[1, 0])  # weight 0: every connection still at the prior
    _frame(planner, fish, 60, running=False)  # the next frame publishes the posterior
    assert ppub.take("posterior")[-1].meta["confounded"] == planner.loop.n_confounded


def test_movement_decoded_in_the_last_response_frame_flags_the_outcome(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **{**PLANNER, "quiet_frames": 0})
    planner.running = False
    fish = TinyFish()
    end = 11 + planner.loop.window.frames_after  # fired after frame 10: lands in 11
    for f in range(end + 1):
        planner.on_message(Message("traces", {"dff": fish.frame(f)}, {}, f, f))
        if f == 10:
            planner.on_message(Message("stim.fired", {"targets": np.array([1, 2], np.int32)},
                                       {}, 10, 10))
        if f < end:
            planner.on_message(Message("decoded", {}, {"moving": False}, f, f))
    assert planner.loop.post.n_tests == 0  # traces complete, the last frame's movement unknown
    planner.on_message(Message("decoded", {}, {"moving": True}, end, end))
    assert planner.loop.post.n_tests == 1 and planner.loop.n_confounded == 1


def test_unarmed_slm_refuses_logs_and_counts(tmp_path):
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    plan = Message("stim.plan", {"targets": np.array([1, 2], np.int32),
                                 "power_mw": np.array([1, 1], np.float32)}, {}, 3, 99)
    slm.on_message(plan)
    assert spub.take("stim.fired") == []
    log, = spub.take("log")
    assert "armed" in log.meta["text"] and slm.stats()["refused"] == 1
    meta = {"sender": "supervisor", "verb": Verb.ARM.value, "target": "*", "args": {},
            "t_ns": 1}
    meta["mac"] = sign_control(slm.spec.control_key, meta)
    slm._handle_control(Message("control", {}, meta))  # the runtime's control path
    assert slm.armed and slm.gate.armed
    slm.on_message(plan)
    fired, = spub.take("stim.fired")
    assert fired.frame == 3 and fired.t_acq_ns == 99 and fired["targets"].tolist() == [1, 2]


@pytest.mark.parametrize("targets, power, reason", [
    (np.arange(11), np.ones(11), "max_targets"),
    (np.array([1, 2]), np.array([1.0, 50.0]), "max_power_mw_per_target"),
])
def test_slm_refuses_plans_above_safety_limits(tmp_path, targets, power, reason):
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    slm.on_message(Message("stim.plan", {"targets": targets.astype(np.int32),
                                         "power_mw": power.astype(np.float32)}))
    assert spub.take("stim.fired") == []
    assert reason in spub.take("log")[0].meta["text"]


def test_slm_computes_and_caches_holograms_from_anatomy(tmp_path):
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    rng = np.random.default_rng(0)
    anatomy = Message("anatomy", {"positions": rng.uniform(0, 400, (30, 3)).astype(np.float32)})
    slm.on_message(anatomy)
    plan = Message("stim.plan", {"targets": np.array([1, 5, 9], np.int32),
                                 "power_mw": np.ones(3, np.float32)})
    slm.on_message(plan)
    slm.on_message(anatomy)  # repeated for late joiners: the cache survives
    slm.on_message(plan)
    assert len(spub.take("stim.fired")) == 2
    assert slm.summary()["hologram_misses"] == 1 and slm.summary()["hologram_hits"] == 1
    assert slm.device.phase.shape == (64, 64) and slm.device.phase.any()


def test_stop_command_stops_planning_and_saves_the_estimate(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 0, running=False)
    planner.on_control(Verb.STOP, {})
    _frame(planner, fish, 1)
    assert ppub.take("stim.plan") == []
    saved = np.load(tmp_path / "connectivity.npz")
    assert saved["edges"].shape[1] == 2 and saved["log_odds_q64"].shape == (30, 30)
    assert planner.summary()["stop_reason"] == "stop command"


def test_max_stims_stopping_rule(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **{**PLANNER, "max_stims": 3})
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    run_loop(planner, ppub, slm, spub, TinyFish(), frames=100)
    assert planner.loop.post.n_tests == 3 and planner.loop.stopped
    assert "max_stims" in planner.summary()["stop_reason"]


def test_low_expected_information_stops_adaptive_mapping(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path,
                         **{**PLANNER, "design": "adaptive", "stop_info_bits": 1e9})
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    run_loop(planner, ppub, slm, spub, TinyFish(), frames=100)
    # the adaptive design starts once 10 outcomes are in; the stimulations then still in
    # their response windows (a plan per frame here) are counted on arrival
    assert planner.loop.stopped and 10 <= planner.loop.post.n_tests <= 13
    assert "expected information" in planner.summary()["stop_reason"]


def test_posterior_summaries_are_recomputed_only_when_the_posterior_changes(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 0, running=False)
    first = planner.loop.derived()
    assert planner.loop.derived() is first
    planner.loop.post.update(np.array([1, 2]), np.zeros(30, np.uint8))
    assert planner.loop.derived() is not first


def test_outcomes_after_stop_are_saved_at_teardown(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    _frame(planner, fish, 0, running=False)
    planner.on_control(Verb.STOP, {})
    assert len(np.load(tmp_path / "connectivity.npz")["members"]) == 0
    planner.loop.post.update(np.array([1, 2]), np.zeros(30, np.uint8))  # a late outcome
    planner.teardown()
    assert len(np.load(tmp_path / "connectivity.npz")["members"]) == 1


def test_slm_reports_one_refused_count_with_hologram_refusals_among_them(tmp_path):
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    plan = Message("stim.plan", {"targets": np.array([1, 2], np.int32),
                                 "power_mw": np.array([1, 1], np.float32)})
    slm.on_message(plan)  # not armed: refused by the gate
    slm.armed = True

    class OffField:
        def get(self, targets, power):
            raise ValueError("target off the SLM field")

    slm.holograms = OffField()
    slm.on_message(plan)
    assert spub.take("stim.fired") == []
    assert slm.stats()["refused"] == 2 and slm.stats()["refused_hologram"] == 1
