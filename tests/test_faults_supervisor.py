"""The supervisor under hostile input: forged heartbeats, bad control requests, floods.

Issue 13, finding 3: a heartbeat with ``stats=[1]`` ended the run, a forged ``handler`` plus a
STATUS request crashed it, an integer >= 2**64 in a control request crashed it, a heartbeat
flood silenced the control channel; finding 4: any local process could send control.
"""
import json
import time
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig import config as cfg
from rig.bus import Publisher
from rig.messages import Message, Verb
from rig.node import sign_control, sign_meta
from rig.control import read_run_secret, send_control
from rig.supervisor import NodeState, Supervisor

pytestmark = pytest.mark.timeout(90)

KEY = b"s" * 32
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
                                                                        allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)


def tiny_config(tmp_path, **run):
    return cfg.parse({"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1, **run},
                      "nodes": {"source": {"class": "rig.selftest:Source", "n_neurons": 50,
                                           "rate_hz": 100},
                                "sink": {"class": "rig.selftest:Sink"}}})


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    """A supervisor that is not started: its handlers are fed directly."""
    tmp = tmp_path_factory.mktemp("idle")
    sup = Supervisor(tiny_config(tmp), run_dir=tmp / "run")
    sup.run_dir.mkdir()
    sup.control_key = KEY
    sup.pub = Publisher("tcp://127.0.0.1:1", "supervisor")  # sends go nowhere, never block
    for name, entry in sup.config.nodes.items():
        sup.nodes[name] = NodeState(None)
    yield sup
    sup.pub.close()


def _beat(key=None, **fields):
    """A heartbeat's meta, signed with ``key`` if given."""
    meta = {"status": "running", "running": True, "armed": False, "run": "", **fields}
    if key is not None:
        meta["mac"] = sign_meta(key, meta)
    return meta


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(meta=st.dictionaries(st.sampled_from(["status", "running", "armed", "stats", "handler",
                                             "latency", "counters", "drops", "run",
                                             "summary"]), json_values, max_size=8),
       source=st.sampled_from(["sink", "source", "nobody"]), signed=st.booleans())
def test_any_heartbeat_leaves_status_and_report_working(idle, meta, source, signed):
    meta = {**_beat(run=idle.run_id), **meta}  # a genuine beat with fields replaced
    if signed:
        try:
            meta["mac"] = sign_meta(KEY, meta)
        except OverflowError:
            pass  # an int msgpack cannot carry: it never arrives from the bus
    idle._on_heartbeat(Message("heartbeat", {}, meta, source=source))
    for name in idle.nodes:  # what a GUI's STATUS poll and the closing report read
        assert isinstance(idle.stats(name), dict)
    json.dumps(idle.status(), default=str)
    assert idle.report()["nodes"].keys() == {"source", "sink"}


def test_malformed_heartbeats_are_counted_and_ignored(idle):
    before = idle.rejected["heartbeats"]
    good = _beat(KEY, run=idle.run_id)
    idle._on_heartbeat(Message("heartbeat", {}, good, source="sink"))
    for forged in (_beat(KEY, run=idle.run_id, stats=[1]),
                   _beat(KEY, run=idle.run_id, handler={"c": {"9999": 1}, "max": 1}),
                   _beat(KEY, run=idle.run_id, counters={"x": 2**63}),
                   _beat(KEY, run="another run"),
                   _beat(run=idle.run_id, status="exited"),  # unsigned
                   _beat(b"x" * 32, run=idle.run_id, status="exited")):  # another key
        idle._on_heartbeat(Message("heartbeat", {}, forged, source="sink"))
    assert idle.rejected["heartbeats"] == before + 6
    assert idle.nodes["sink"].beat == good  # the last genuine one stands


def _signed(verb="status", target="*", args=None, t_ns=None, key=KEY):
    request = {"sender": "ctl", "verb": verb, "target": target, "args": args or {},
               "t_ns": t_ns or time.time_ns()}
    request["mac"] = sign_control(key, request)
    return msgspec.json.encode(request)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode())
       | st.builds(lambda v, t, a: json.dumps({"verb": v, "target": t, "args": a}).encode(),
                   st.sampled_from([v.value for v in Verb] + ["nope"]),
                   st.sampled_from(["*", "sink", "nosuchnode"]), json_values))
def test_unsigned_or_malformed_requests_are_refused_never_raised(idle, body):
    idle._stop = False
    with pytest.raises(ValueError):
        idle._answer(body)
    assert idle._stop is False


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verb=st.sampled_from([v.value for v in Verb]), args=st.dictionaries(
    st.sampled_from(["key", "value", "on", "node", "x"]),
    st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.booleans(), max_size=3),
    target=st.sampled_from(["*", "sink", "nosuchnode"]))
def test_signed_requests_are_answered_or_refused_in_words(idle, verb, args, target):
    idle._stop = False
    try:
        reply = idle._answer(_signed(verb, target, args))
    except ValueError as exc:
        assert str(exc)
        return
    assert reply["ok"] and verb != "ping" and target != "nosuchnode"


def test_a_request_holding_a_huge_integer_is_refused(idle):
    with pytest.raises(ValueError, match="set args"):
        idle._answer(_signed("set", "sink", {"key": "x", "value": 2**63}))
    body = json.dumps({"verb": "set", "target": "sink", "args": {"key": "x", "value": 2**64},
                       "t_ns": time.time_ns(), "mac": "0" * 64}).encode()
    with pytest.raises(ValueError, match="set args"):  # checked before the MAC is computed
        idle._answer(body)


def test_control_signed_with_another_secret_old_or_replayed_is_refused(idle):
    with pytest.raises(ValueError, match="not signed with this run's secret"):
        idle._answer(_signed(key=b"x" * 32))
    with pytest.raises(ValueError, match="from now"):
        idle._answer(_signed(t_ns=time.time_ns() - 120 * 10**9))
    body = _signed("pause")
    assert idle._answer(body)["ok"]
    with pytest.raises(ValueError, match="replay"):
        idle._answer(body)


def test_a_deeply_nested_request_is_refused(idle):
    body = b'{"verb": "set", "args": {"key": "k", "value": ' + b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ValueError, match="bad request"):
        idle._answer(body + b"}}")


def test_unknown_target_is_an_error(idle):
    with pytest.raises(ValueError, match="unknown target 'nosuchnode'"):
        idle._answer(_signed("pause", "nosuchnode"))


# -- a running loop ---------------------------------------------------------------------
@pytest.fixture
def loop(tmp_path):
    sup = Supervisor(tiny_config(tmp_path), run_dir=tmp_path / "run")
    sup.start()
    yield sup
    sup.shutdown()
    assert not any(s.process.is_alive() for s in sup.nodes.values())


def ask(loop, verb, target="*", args=None, secret="run"):
    secret = read_run_secret(loop.run_dir) if secret == "run" else secret
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(send_control, loop.endpoints.control, verb, target, args, 10_000,
                            None, secret)
        assert loop.wait_for(lambda s: reply.done(), timeout_s=20)
        return reply.result()


def test_the_run_secret_file_is_private(loop):
    path = loop.run_dir / "control.secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(read_run_secret(loop.run_dir)) == 32


def test_unsigned_control_on_loopback_is_refused(loop):
    assert loop.wait_for(lambda s: s.stats("source").get("frames", 0) > 5)
    reply = ask(loop, "pause", secret=None)
    assert not reply["ok"] and "unsigned" in reply["error"]
    frames = loop.stats("source")["frames"]
    assert loop.wait_for(lambda s: s.stats("source")["frames"] > frames + 5)  # still running
    assert loop.rejected["control"] == 1


def test_control_is_answered_under_a_heartbeat_flood(loop):
    flood = zmq.Context.instance().socket(zmq.PUB)
    flood.linger = 0
    flood.sndhwm = 0
    flood.connect(loop.endpoints.pub)
    forged = [b"heartbeat", msgspec.msgpack.encode(
        {"v": 1, "source": "sink", "seq": 0, "frame": -1, "t_acq_ns": 0, "t_send_ns": 0,
         "arrays": [], "meta": _beat(stats=[1], handler={"c": {"x": 1}})})]
    try:
        assert loop.wait_for(lambda s: s.stats("sink").get("frames", 0) > 5)
        for _ in range(30_000):  # queued faster than the supervisor reads them
            flood.send_multipart(forged)
        reply = ask(loop, "status")
        assert reply["ok"] and reply["status"]["sink"]["status"] == "running"
        assert loop.rejected["heartbeats"] > 0
        assert ask(loop, "pause", "source")["ok"]
        assert loop.wait_for(lambda s: s.nodes["source"].beat["running"] is False)
        assert not loop.stop_reason and loop.nodes["sink"].restarts == 0
    finally:
        flood.close(0)


def test_a_control_flood_leaves_the_genuine_request_answered(loop):
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(loop.endpoints.control)
    try:
        for _ in range(500):
            raw.send_multipart([b"", b'{"verb": "arm"}'])
        reply = ask(loop, "status")
        assert reply["ok"]
        assert loop.wait_for(lambda s: s.rejected["control"] == 500, timeout_s=20)
        assert not any(b.beat.get("armed") for b in loop.nodes.values())
    finally:
        raw.close(0)


def test_set_and_record_reach_nodes_and_unknown_targets_are_errors(loop, capsys):
    from rig.cli import main

    def ctl(*argv):
        with ThreadPoolExecutor(1) as pool:
            code = pool.submit(main, ["ctl", *argv, "--run", str(loop.run_dir)])
            assert loop.wait_for(lambda s: code.done(), timeout_s=20)
        return code.result()

    assert ctl("set", "delay_ms=1.5", "--target", "sink") == 0
    assert loop.wait_for(lambda s: s.stats("sink")["set"] == "delay_ms=1.5")
    assert ctl("record", "off") == 0
    assert loop.wait_for(lambda s: s.stats("sink")["recording"] is False)
    assert ctl("record", "on") == 0
    assert loop.wait_for(lambda s: s.stats("sink")["recording"] is True)
    assert ctl("pause", "--target", "nosuchnode") == 1
    err = capsys.readouterr().err
    assert "unknown target 'nosuchnode'" in err and len(err.strip().splitlines()) == 1
    assert ctl("set", "novalue") == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_disarm_overtakes_a_data_backlog(tmp_path):
    import numpy as np

    from rig.bus import Subscriber, wait_connected

    config = cfg.parse({"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1,
                                "arm_on_start": True},
                        "nodes": {"sink": {"class": "rig.selftest:Sink", "delay_ms": 50}}})
    sup = Supervisor(config, run_dir=tmp_path / "run")
    flood = spy = None
    try:
        sup.start()
        assert sup.wait_for(lambda s: s.nodes["sink"].beat.get("armed") is True)
        flood = Publisher(sup.endpoints.pub, "flood", hwm=0)
        spy = Subscriber(sup.endpoints.sub, ())
        wait_connected(flood, spy, "_hello.flood")
        for i in range(300):  # 15 s of work for a sink that takes 50 ms a message
            flood.publish("traces", {"dff": np.zeros(4, np.float32)}, frame=i)
        assert sup.wait_for(lambda s: s.stats("sink")["frames"] > 0)
        sup.command(Verb.DISARM)
        assert sup.wait_for(lambda s: s.nodes["sink"].beat["armed"] is False)
        assert sup.stats("sink")["frames"] < 150  # handled before the backlog, not after it
        # and the supervisor's pings overtook it too: a busy node's dead-man does not trip
        assert sup.nodes["sink"].beat["counters"].get("deadman_disarms", 0) == 0
    finally:
        for sock in (flood, spy):
            if sock is not None:
                sock.close()
        sup.shutdown()
