"""The SLM node fails to off: its dead-man switch and its anatomy fixed for a run.

Issue 13: an SLM whose supervisor had died kept firing; anyone on the bus could replace
its anatomy (target-id limit and positions). Driven in-process, as tests/test_stim_node.py.
"""
import time

import numpy as np
import pytest

from rig.bus import Endpoints
from rig.messages import Message
from rig.node import NodeSpec, Verb, sign_control
from stim.slm_node import SLM

KEY = b"r" * 32


class Collect:
    def __init__(self):
        self.sent = []

    def publish(self, topic, arrays=None, meta=None, frame=-1, t_acq_ns=0):
        self.sent.append(Message(topic, dict(arrays or {}), dict(meta or {}), frame, t_acq_ns))

    def fired(self):
        return [m for m in self.sent if m.topic == "stim.fired"]


@pytest.fixture
def slm(tmp_path):
    spec = NodeSpec("slm", "stim.slm_node:SLM",
                    {"min_interval_s": 0.0, "device_settings": {"shape": [64, 64]},
                     "max_rate_hz_per_neuron": 1e6},
                    Endpoints("", "", ""), str(tmp_path), control_key=KEY, run_id="r1",
                    deadman_s=1.0)
    node = SLM(spec, Collect())
    node.setup()
    node._heard_supervisor = time.monotonic()  # as the runtime's loop does
    yield node
    node.teardown()


def control(node, verb, args=None):
    meta = {"sender": "local", "verb": verb, "target": "*", "args": args or {},
            "t_ns": time.time_ns(), "run": "r1"}
    meta["mac"] = sign_control(KEY, meta)
    node._dispatch(Message("control", {}, meta))


def plan(node, target=1):
    node._dispatch(Message("stim.plan", {"targets": np.array([target], np.int32),
                                         "power_mw": np.array([1.0], np.float32)}))


def anatomy(node, positions):
    node._dispatch(Message("anatomy", {"positions": np.asarray(positions, np.float32)}))


def test_an_armed_slm_fires_nothing_once_its_supervisor_is_silent(slm):
    control(slm, "arm")
    plan(slm)
    assert len(slm._pub.fired()) == 1
    slm._heard_supervisor = time.monotonic() - 1.5  # 1.5 s without a ping (deadman_s 1)
    for target in range(5):
        plan(slm, target)
    assert len(slm._pub.fired()) == 1
    assert not slm.armed and not slm.gate.armed and slm.counters["deadman_disarms"] == 1


def test_the_anatomy_is_fixed_for_a_run_until_a_signed_reset(slm):
    first = np.array([[0, 0, 0], [10, 5, 0], [20, -5, 0]], float)
    anatomy(slm, first)
    anatomy(slm, first * 3)  # another publisher's anatomy
    assert np.array_equal(slm.holograms.positions, first)
    assert slm.counters["anatomy_refused"] == 1 and slm.gate.limits.n_neurons == 3
    control(slm, Verb.SET.value, {"key": "anatomy", "value": "reset"})
    anatomy(slm, first * 3)
    assert np.array_equal(slm.holograms.positions, first * 3)
