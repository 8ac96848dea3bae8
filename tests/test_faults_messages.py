"""Hostile bytes on the bus: decoding and the node's control path only ever reject, counted.

Each test here failed on the runtime before it was made fail-safe (issue 13, finding 2):
one message could raise past ``Subscriber.accept`` or ``Node._control_is_genuine`` and
kill a node, or the supervisor.
"""
import time

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.bus import Endpoints, Subscriber
from rig.messages import (SCHEMA_VERSION, ControlMeta, HeartbeatMeta, Message, MessageError,
                          decode, encode, parse_meta)
from rig.node import Node, NodeSpec, Verb, sign_control

KEY = b"k" * 32

# Plain values msgpack carries, with the awkward ones: huge ints, inf, nan, deep nesting.
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)

header_dicts = st.fixed_dictionaries({
    "v": st.just(SCHEMA_VERSION) | st.integers(-5, 5),
    "source": st.text(max_size=10),
    "seq": st.integers(-(2**63), 2**64 - 1),
    "frame": st.integers(-(2**63), 2**64 - 1),
    "t_acq_ns": st.integers(-(2**63), 2**64 - 1) | st.floats(),
    "t_send_ns": st.integers(0, 2**64 - 1),
    "arrays": st.lists(st.tuples(st.sampled_from(["dff", "x", ""]),
                                 st.sampled_from(["float32", "uint16", "int32", "O", "bogus"]),
                                 st.lists(st.integers(0, 2**64 - 1), max_size=4)), max_size=3),
    "meta": st.dictionaries(st.text(max_size=8), plain, max_size=4),
})


def _frames(topic: bytes, header: dict, buffers: list[bytes]) -> list[bytes]:
    return [topic, msgspec.msgpack.encode(header), *buffers]


@settings(max_examples=200, deadline=None)
@given(topic=st.sampled_from([b"traces", b"heartbeat", b"control", b"stim.plan", b"\xff"]),
       header=header_dicts, buffers=st.lists(st.binary(max_size=64), max_size=3))
def test_decode_raises_only_message_error(topic, header, buffers):
    try:
        msg = decode(_frames(topic, header, buffers))
    except MessageError:
        return
    assert isinstance(msg, Message) and msg.topic == topic.decode()
    assert 0 <= msg.t_acq_ns < 2**63 and all(not a.flags.writeable for a in msg.arrays.values())


@pytest.fixture(scope="module")
def sub():
    s = Subscriber("tcp://127.0.0.1:1")  # never connects: accept() is fed directly
    yield s
    s.close()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=80), max_size=5))
def test_random_frames_are_counted_never_raised(sub, frames):
    before, received = sub.malformed, sub.received
    got = sub.accept(frames)
    assert (got is None) == (sub.malformed == before + 1)
    assert sub.received == received + (got is not None)


def test_a_shape_whose_product_wraps_is_rejected_not_reshaped():
    header = {"v": SCHEMA_VERSION, "source": "x", "seq": 0, "frame": 0, "t_acq_ns": 0,
              "t_send_ns": 0, "arrays": [["dff", "float32", [2**62, 4]]], "meta": {}}
    with pytest.raises(MessageError, match="needs"):
        decode(_frames(b"traces", header, [b""]))


@pytest.mark.parametrize("value", [float("inf"), -1, 2**63, 2**64 - 1])
def test_times_out_of_range_are_rejected(value):
    header = {"v": SCHEMA_VERSION, "source": "x", "seq": 0, "frame": 0, "t_acq_ns": value,
              "t_send_ns": 0, "arrays": [], "meta": {}}
    with pytest.raises(MessageError, match="t_acq_ns"):
        decode(_frames(b"traces", header, []))


def _node(**spec) -> Node:
    spec = NodeSpec("n", "rig.node:Node", {}, Endpoints("", "", ""), "/tmp", control_key=KEY,
                    run_id="run-a", **spec)
    return Node(spec)


def _signed(**fields) -> dict:
    meta = {"sender": "local", "verb": "arm", "target": "*", "args": {},
            "t_ns": time.time_ns(), "run": "run-a", **fields}
    meta["mac"] = sign_control(KEY, meta)
    return meta


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=st.dictionaries(st.sampled_from(["sender", "verb", "target", "args", "t_ns",
                                             "mac", "run"]), plain, max_size=7)
       | st.dictionaries(st.text(max_size=6), plain, max_size=5))
def test_any_control_meta_is_refused_without_raising_or_arming(meta):
    node = _node()
    assert node._handle_control(Message("control", {}, meta)) is False
    assert node.armed is False and node.counters["control_refused"] == 1


@pytest.mark.parametrize("t_ns", [float("inf"), float("nan"), 2**64 - 1, -1, "1e400"])
def test_control_with_an_impossible_time_is_refused(t_ns):
    node = _node()
    meta = _signed()
    meta["t_ns"] = t_ns  # the MAC no longer matters: the time alone must not raise
    assert node._handle_control(Message("control", {}, meta)) is False
    assert not node.armed and node.counters["control_refused"] == 1


def test_control_of_another_run_is_refused_even_with_the_same_key():
    node = _node()
    assert node._handle_control(Message("control", {}, _signed(run="run-b"))) is False
    assert not node.armed and node.counters["control_refused"] == 1
    node._handle_control(Message("control", {}, _signed()))
    assert node.armed


def test_an_armed_node_disarms_when_its_supervisor_falls_silent():
    node = _node(deadman_s=1.0)
    node._handle_control(Message("control", {}, _signed()))
    assert node.armed
    node._heard_supervisor = time.monotonic() - 0.5
    node._check_deadman()
    assert node.armed  # within the dead-man time
    node._heard_supervisor = time.monotonic() - 1.5  # as if 1.5 s passed without a ping
    node._check_deadman()
    assert not node.armed and node.counters["deadman_disarms"] == 1


def test_an_armed_node_disarms_when_its_supervisor_process_is_gone():
    node = _node(parent_pid=1)  # not our parent: as after the supervisor died
    node._heard_supervisor = time.monotonic()
    node.armed = True
    node._check_deadman()
    assert not node.armed and node.counters["deadman_disarms"] == 1


@settings(max_examples=200, deadline=None)
@given(meta=st.dictionaries(st.sampled_from(list(HeartbeatMeta.__struct_fields__)), plain,
                            max_size=10))
def test_heartbeat_meta_is_either_valid_or_a_message_error(meta):
    try:
        beat = parse_meta(meta, HeartbeatMeta)
    except MessageError:
        return
    from rig.telemetry import LatencyHistogram

    LatencyHistogram.from_wire(msgspec.to_builtins(beat.handler)).summary()
    assert isinstance(beat.stats, dict) and isinstance(beat.counters, dict)


def test_round_trip_of_the_runtime_structs():
    meta = _signed()
    assert parse_meta(meta, ControlMeta).verb is Verb.ARM
    msg = decode(encode(Message("traces", {"dff": np.ones(3, np.float32)}, {}, 7, 5)))
    assert msg.frame == 7 and msg["dff"].sum() == 3


def test_a_deeply_nested_header_is_a_message_error():
    header = msgspec.msgpack.encode({"v": SCHEMA_VERSION, "source": "x", "seq": 0, "frame": 0,
                                     "t_acq_ns": 0, "t_send_ns": 0, "arrays": [], "meta": {}})
    nested = header[:-1] + b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0"  # meta {"a": [[[...]]]}
    with pytest.raises(MessageError):
        decode([b"traces", nested])
