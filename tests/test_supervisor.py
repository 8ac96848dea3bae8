"""The supervisor and node runtime: start, control, crash handling, restarts, clean stop."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import zmq

from rig import config as cfg
from rig.bus import Publisher
from rig.node import Verb
from rig.control import read_run_secret, send_control
from rig.supervisor import LoopError, Supervisor

pytestmark = pytest.mark.timeout(60)


def make_loop(tmp_path, source=None, sink=None, run=None):
    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1, "max_restarts": 2, **(run or {})},
           "nodes": {"source": {"class": "rig.selftest:Source", "n_neurons": 100,
                                "rate_hz": 100, **(source or {})},
                     "sink": {"class": "rig.selftest:Sink", **(sink or {})}}}
    return Supervisor(cfg.parse(raw), run_dir=tmp_path / "run")


@pytest.fixture
def loop(request, tmp_path):
    sup = make_loop(tmp_path, **getattr(request, "param", {}))
    yield sup
    sup.shutdown()
    assert not any(s.process.is_alive() for s in sup.nodes.values())


def sink_frames(sup):
    return sup.stats("sink").get("frames", 0)


def test_loop_runs_and_reports_latency(loop):
    loop.start()
    assert loop.wait_for(lambda s: sink_frames(s) >= 50)
    latency = loop.latency()
    assert latency[("sink", "traces", "hop")].n > 0
    assert latency[("sink", "traces", "age")].percentile_ms(50) < 1000


@pytest.mark.parametrize("loop", [{"sink": {"fail_every": 5}}], indirect=True)
def test_handler_errors_are_counted_and_the_node_goes_on(loop):
    loop.start()
    assert loop.wait_for(lambda s: sink_frames(s) >= 30)
    beat = loop.nodes["sink"].beat
    assert beat["counters"]["errors"] >= 5
    assert "deliberate failure" in beat["last_error"]
    assert loop.nodes["sink"].restarts == 0


@pytest.mark.parametrize("loop", [{"sink": {"unsendable_stats": True}}], indirect=True)
def test_unsendable_stats_are_reported_and_the_node_keeps_beating(loop):
    loop.start()
    assert loop.wait_for(lambda s: "not sendable" in s.nodes["sink"].beat.get("last_error", ""))
    beats = loop.nodes["sink"].last_beat
    assert loop.wait_for(lambda s: s.nodes["sink"].last_beat > beats)
    assert loop.nodes["sink"].restarts == 0


@pytest.mark.parametrize("loop", [{"sink": {"exit_on_frame": 20}}], indirect=True)
def test_a_dead_node_is_restarted_and_rejoins(loop):
    loop.start()
    assert loop.wait_for(lambda s: s.nodes["sink"].restarts == 1)
    assert loop.wait_for(lambda s: sink_frames(s) >= 10 and s.nodes["sink"].status == "running")
    assert not loop.stop_reason


@pytest.mark.parametrize("loop", [{"sink": {"exit_on_frame": 40},
                                   "run": {"arm_on_start": True}}], indirect=True)
def test_a_restarted_node_rejoins_as_the_loop_is_now_not_as_it_started(loop):
    loop.start()
    assert loop.wait_for(lambda s: s.nodes["sink"].beat.get("armed") is True)
    loop.command(Verb.DISARM)
    assert loop.wait_for(lambda s: s.nodes["sink"].restarts == 1)
    assert loop.wait_for(lambda s: s.nodes["sink"].status == "running")
    assert loop.nodes["sink"].beat["armed"] is False


@pytest.mark.parametrize("loop", [{"sink": {"always_exit": True}}], indirect=True)
def test_a_node_that_keeps_dying_stops_the_loop_and_says_why(loop):
    loop.start()
    assert not loop.wait_for(lambda s: False, timeout_s=30)
    assert "node 'sink' failed 3 times (exit code 3)" in loop.stop_reason
    assert "sink.log" in loop.stop_reason


def ask(loop, *args):
    """Send a control request from another thread while the supervisor runs."""
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(send_control, loop.endpoints.control, *args,
                            secret=read_run_secret(loop.run_dir))
        assert loop.wait_for(lambda s: reply.done())
        return reply.result()


def test_control_channel_pauses_and_reports_status(loop):
    loop.start()
    assert loop.wait_for(lambda s: sink_frames(s) >= 5)
    assert ask(loop, Verb.PAUSE, "source")["ok"]
    assert loop.wait_for(lambda s: s.nodes["source"].beat.get("running") is False)
    assert set(ask(loop, "status")["status"]) == {"source", "sink"}
    bad = zmq.Context.instance().socket(zmq.DEALER)
    bad.linger = 0
    bad.connect(loop.endpoints.control)
    bad.send_multipart([b"", b"not json"])
    assert loop.wait_for(lambda s: bad.poll(0), timeout_s=5)
    assert b"bad request" in bad.recv_multipart()[-1]
    bad.close(0)


def test_forged_or_replayed_control_cannot_command_a_node(loop):
    from rig.bus import Subscriber, wait_connected

    loop.start()
    assert loop.wait_for(lambda s: sink_frames(s) >= 5)
    forger = Publisher(loop.endpoints.pub, "supervisor")  # claims the supervisor's name
    spy = Subscriber(loop.endpoints.sub, ("control",))
    try:
        wait_connected(forger, spy, "_hello.spy")

        def refused(s, n):  # resend until the new publisher has joined and been heard
            forger.publish("control", meta={"sender": "local", "verb": "pause", "target": "*",
                                            "args": {}, "t_ns": time.time_ns(), "mac": "0" * 64})
            return s.nodes["source"].beat["counters"].get("control_refused", 0) >= n
        assert loop.wait_for(lambda s: refused(s, 1))
        assert loop.nodes["source"].beat["running"] is True
        # A genuine PAUSE, captured on the bus, replayed after RESUME: refused.
        ask(loop, Verb.PAUSE, "source")
        captured = spy.recv(timeout_ms=2000)
        while captured.meta["verb"] != "pause":  # skip the forgeries and pings before it
            captured = spy.recv(timeout_ms=2000)
        assert captured.meta["verb"] == "pause"
        ask(loop, Verb.RESUME, "source")
        assert loop.wait_for(lambda s: s.nodes["source"].beat.get("running") is True)
        before = loop.nodes["source"].beat["counters"].get("control_refused", 0)
        forger.publish("control", meta=captured.meta)
        assert loop.wait_for(lambda s: s.nodes["source"].beat["counters"].get(
            "control_refused", 0) > before)
        assert loop.nodes["source"].beat["running"] is True
    finally:
        forger.close()
        spy.close()


def test_malformed_input_is_reported_and_the_loop_goes_on(loop):
    loop.start()
    raw = zmq.Context.instance().socket(zmq.PUB)
    raw.linger = 0
    raw.connect(loop.endpoints.pub)
    try:
        def garbage_counted(s):
            raw.send_multipart([b"traces", b"\x00not a header"])
            return s.nodes["sink"].beat.get("malformed", 0) > 0
        assert loop.wait_for(garbage_counted)
        frames = sink_frames(loop)
        assert loop.wait_for(lambda s: sink_frames(s) > frames + 10)
    finally:
        raw.close(0)


def test_shutdown_stops_every_process_within_two_seconds(tmp_path):
    sup = make_loop(tmp_path)
    sup.start()
    sup.wait_for(lambda s: sink_frames(s) >= 5)
    t0 = time.monotonic()
    sup.shutdown()
    assert time.monotonic() - t0 < 2.0
    assert not any(s.process.is_alive() for s in sup.nodes.values())
    report = sup.report()
    assert report["summaries"]["sink"]["frames received"] >= 5
    assert (tmp_path / "run" / "summary.json").exists()
    assert (tmp_path / "run" / "logs" / "sink.log").exists()


def test_a_node_that_never_gets_ready_is_named(tmp_path):
    sup = make_loop(tmp_path, run={"ready_timeout_s": 0.01})
    with pytest.raises(LoopError, match=r"not ready after .*logs"):
        sup.start()
    sup.shutdown()


def test_nodes_on_two_machines_share_one_keyed_bus(tmp_path):
    from rig.bus import Endpoints, make_keys

    make_keys(tmp_path / "keys", ["rig"])
    ports = [_free_port() for _ in range(3)]
    raw = {"run": {"out_dir": str(tmp_path), "heartbeat_s": 0.1},
           "bus": {"curve": True, "keys_dir": str(tmp_path / "keys"), "pub_port": ports[0],
                   "sub_port": ports[1], "control_port": ports[2]},
           "nodes": {"source": {"class": "rig.selftest:Source", "rate_hz": 100},
                     "sink": {"class": "rig.selftest:Sink", "machine": "gpu-box"}}}
    config = cfg.parse(raw)
    acquisition = Supervisor(config, "local", tmp_path / "a")
    attach = Endpoints(*(f"tcp://127.0.0.1:{p}" for p in ports))
    gpu = Supervisor(config, "gpu-box", tmp_path / "b", attach=attach)
    try:
        acquisition.start()
        with ThreadPoolExecutor(1) as pool:  # the gpu-box asks the bus owner for its run id
            joined = pool.submit(gpu.start)
            assert acquisition.wait_for(lambda s: joined.done())
            joined.result()
        assert gpu.run_id == acquisition.run_id
        assert set(acquisition.nodes) == {"source"} and set(gpu.nodes) == {"sink"}
        assert gpu.wait_for(lambda s: s.stats("sink").get("frames", 0) >= 20)
        # The gpu-box's run ends; the acquisition machine's nodes are not its to stop.
        gpu.shutdown()
        frames = acquisition.stats("source")["frames"]
        assert acquisition.wait_for(lambda s: s.stats("source")["frames"] > frames + 10)
        assert acquisition.nodes["source"].beat["running"] is True
    finally:
        gpu.shutdown()
        acquisition.shutdown()


def _free_port() -> int:
    sock = zmq.Context.instance().socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(0)
    return port


def test_rig_ctl_reports_status_of_a_running_loop(loop, capsys):
    from rig.cli import main

    loop.start()
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(main, ["ctl", "status", "--run", str(loop.run_dir)])
        assert loop.wait_for(lambda s: code.done())
    assert code.result() == 0
    assert '"source"' in capsys.readouterr().out
