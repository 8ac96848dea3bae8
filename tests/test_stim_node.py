"""The Planner and SLM nodes, driven in-process with a tiny OR-channel 'fish'."""
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
               min_interval_s=0.0,
               max_rate_hz_per_neuron=1e6, quiet_frames=1, publish_every_s=0.0,
               baseline_frames=2, response_frames=2)
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


def run_loop(planner, ppub, slm, spub, fish, frames, moving=lambda f: False, every=5):
    planner.on_message(Message("sim.truth", {"presyn": fish.presyn.astype(np.int32)}))
    for f in range(frames):
        planner.on_message(Message("traces", {"dff": fish.frame(f)}, {}, f, 1000 + f))
        planner.on_message(Message("decoded", {"pred": np.zeros(2, np.float32)},
                                   {"moving": moving(f)}, f, 1000 + f))
        if f % every == 0:
            planner.step()
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
    planner.step()
    post = ppub.take("posterior")[-1]
    assert post.meta["stop"] and "marginals outside" in post.meta["stop_reason"]
    assert post.meta["precision"] >= 0.9 and post.meta["recall"] >= 0.9
    assert (tmp_path / "connectivity.npz").exists()
    assert post["out_degree"].shape == (30,) and post["marginals"].shape == (30, 30)
    assert slm.summary()["fired"] == planner.counters["fired"]


def test_plans_carry_the_newest_frame_time_and_safe_sizes(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    planner.on_message(Message("traces", {"dff": fish.frame(0)}, {}, 7, 12345))
    planner.step()
    plan, = ppub.take("stim.plan")
    assert plan.frame == 7 and plan.t_acq_ns == 12345
    assert plan["targets"].dtype == np.int32 and plan["power_mw"].dtype == np.float32
    assert len(plan["targets"]) == 5


def test_no_plan_while_the_fish_is_moving(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    planner.on_message(Message("traces", {"dff": fish.frame(0)}, {}, 0, 1))
    planner.on_message(Message("decoded", {"pred": np.zeros(2, np.float32)}, {"moving": True},
                               0, 1))
    planner.step()
    assert ppub.take("stim.plan") == []


@pytest.mark.parametrize("tail_meta", [{"moving": True}, {}], ids=["moving", "no flag"])
def test_no_plan_while_the_camera_sees_movement_or_loses_the_tail(tmp_path, tail_meta):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    planner.on_message(Message("traces", {"dff": fish.frame(0)}, {}, 0, 1))
    planner.on_message(Message("decoded", {"pred": np.zeros(2, np.float32)}, {"moving": False},
                               0, 1))
    planner.on_message(Message("tail", {"angles": np.zeros(2, np.float32)}, tail_meta, 0, 1))
    planner.step()
    planner.step()
    assert ppub.take("stim.plan") == []
    assert planner.summary()["stims withheld (fish moving)"] == 1


def test_outcomes_during_a_bout_are_flagged_and_discarded(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **{**PLANNER, "quiet_frames": 0})
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    fish = TinyFish()
    run_loop(planner, ppub, slm, spub, fish, frames=60, moving=lambda f: True)
    lam = planner.post.lam
    assert planner.n_confounded >= 5 and planner.n_confounded == planner.post.n_tests
    off = lam != -32768
    assert np.all(lam[off] == lam[1, 0])  # weight 0: every connection still at the prior
    planner.step()
    assert ppub.take("posterior")[-1].meta["confounded"] == planner.n_confounded


def test_movement_decoded_in_the_last_response_frame_flags_the_outcome(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **{**PLANNER, "quiet_frames": 0})
    fish = TinyFish()
    end = 10 + planner.window.frames_after
    for f in range(end + 1):
        planner.on_message(Message("traces", {"dff": fish.frame(f)}, {}, f, f))
        if f == 10:
            planner.on_message(Message("stim.fired", {"targets": np.array([1, 2], np.int32)},
                                       {}, 10, 10))
        if f < end:
            planner.on_message(Message("decoded", {}, {"moving": False}, f, f))
    assert planner.post.n_tests == 0  # traces complete, the last frame's movement unknown
    planner.on_message(Message("decoded", {}, {"moving": True}, end, end))
    assert planner.post.n_tests == 1 and planner.n_confounded == 1


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
    planner.on_message(Message("traces", {"dff": fish.frame(0)}, {}, 0, 1))
    planner.on_control(Verb.STOP, {})
    planner.running = False
    planner.step()
    assert ppub.take("stim.plan") == []
    saved = np.load(tmp_path / "connectivity.npz")
    assert saved["edges"].shape[1] == 2 and saved["log_odds_q64"].shape == (30, 30)
    assert planner.summary()["stop_reason"] == "stop command"


def test_max_stims_stopping_rule(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **{**PLANNER, "max_stims": 3})
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    run_loop(planner, ppub, slm, spub, TinyFish(), frames=100)
    assert planner.post.n_tests == 3 and planner.stopped
    assert "max_stims" in planner.summary()["stop_reason"]


def test_low_expected_information_stops_adaptive_mapping(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path,
                         **{**PLANNER, "design": "adaptive", "stop_info_bits": 1e9})
    slm, spub = make(SLM, "slm", tmp_path, **SLM_OK)
    slm.armed = True
    run_loop(planner, ppub, slm, spub, TinyFish(), frames=100)
    assert planner.stopped and planner.post.n_tests == 10  # adaptive design starts at 10
    assert "expected information" in planner.summary()["stop_reason"]


def test_posterior_summaries_are_recomputed_only_when_the_posterior_changes(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    planner.on_message(Message("traces", {"dff": fish.frame(0)}, {}, 0, 1))
    first = planner._derived()
    assert planner._derived() is first
    planner.post.update(np.array([1, 2]), np.zeros(30, np.uint8))
    assert planner._derived() is not first


def test_outcomes_after_stop_are_saved_at_teardown(tmp_path):
    planner, ppub = make(Planner, "planner", tmp_path, **PLANNER)
    fish = TinyFish()
    planner.on_message(Message("traces", {"dff": fish.frame(0)}, {}, 0, 1))
    planner.on_control(Verb.STOP, {})
    assert len(np.load(tmp_path / "connectivity.npz")["members"]) == 0
    planner.post.update(np.array([1, 2]), np.zeros(30, np.uint8))  # a late outcome
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
