"""Killing the supervisor: no node outlives its run and nothing fires after it.

Issue 13, finding 1: a SIGKILLed or SIGTERMed supervisor left every node running (an armed
SLM fired what a process on the freed ports sent it), no summary was written, and a stop
during start-up left nodes (one deaf to SIGTERM while loading) alive with parent PID 1.
Each test runs ``rig run`` as a child process, as a user (or the dashboard) does.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from rig.bus import Proxy, Publisher, Subscriber, wait_connected
from rig.messages import STIM_FIRED, STIM_PLAN
from rig.control import read_run_secret, send_control

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    sock = zmq.Context.instance().socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(0)
    return port


def write_config(tmp_path: Path, nodes: str, bus: str = "", run: str = "") -> Path:
    path = tmp_path / "loop.toml"
    path.write_text(f"[run]\nheartbeat_s = 0.1\ndeadman_s = 1.0\n{run}\n[bus]\n{bus}\n{nodes}")
    return path


def start_loop(tmp_path: Path, config: Path) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    with open(tmp_path / "stderr.txt", "wb") as stderr:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "rig.cli", "run", "--config",
                                 str(config), "--out", str(run_dir)], env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    return proc, run_dir


def status(run_dir: Path) -> dict:
    """The supervisor's STATUS, or {} while it cannot answer yet."""
    try:
        endpoint = json.loads((run_dir / "endpoints.json").read_text())["control"]
        reply = send_control(endpoint, "status", timeout_ms=1000,
                             secret=read_run_secret(run_dir))
    except (OSError, ValueError, KeyError, TimeoutError):
        return {}
    return reply.get("status", {})


def wait_until(condition, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.05)  # another process's state: polled, with a deadline


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody reaps (a container's PID 1) has ended all the same
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def node_pids(run_dir: Path, states=("running",)) -> dict[str, int]:
    nodes = status(run_dir)
    if nodes and all(n["status"] in states for n in nodes.values()):
        return {name: n["pid"] for name, n in nodes.items()}
    return {}


SELFTEST = """
[nodes.source]
class = "rig.selftest:Source"
n_neurons = 50
rate_hz = 50
[nodes.sink]
class = "rig.selftest:Sink"
"""

# A paced plan source and an SLM that would fire every plan while armed.
PLANS_TO_AN_SLM = """
[nodes.planner]
class = "rig.selftest:PlanSource"
rate_hz = 20
[nodes.slm]
class = "stim.slm_node:SLM"
min_interval_s = 0.0
max_rate_hz_per_neuron = 1000.0
device_settings = {shape = [32, 32]}
"""


def test_sigterm_stops_the_loop_writes_the_summary_and_ends_every_node(tmp_path):
    proc, run_dir = start_loop(tmp_path, write_config(tmp_path, SELFTEST))
    try:
        pids = {}
        wait_until(lambda: pids.update(node_pids(run_dir)) or pids, what="loop running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["stop_reason"] == "SIGTERM"
        assert summary["summaries"]["sink"]["frames received"] > 0
        assert not [name for name, pid in pids.items() if alive(pid)]
    finally:
        proc.kill()


def test_a_stop_during_start_up_ends_a_node_deaf_to_sigterm(tmp_path):
    nodes = SELFTEST + "setup_s = 300\n"  # the sink "loads a model" and ignores SIGTERM
    proc, run_dir = start_loop(tmp_path, write_config(tmp_path, nodes))
    try:
        pids = {}
        wait_until(lambda: pids.update(node_pids(run_dir, ("starting", "ready", "idle")))
                   or len(pids) == 2, what="nodes spawned")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 1  # the loop never started: a failed run
        summary = json.loads((run_dir / "summary.json").read_text())
        assert "stopped during start-up (SIGTERM)" in summary["stop_reason"]
        assert not [name for name, pid in pids.items() if alive(pid)]
    finally:
        proc.kill()


def test_a_killed_supervisor_ends_its_nodes_and_its_slm_fires_nothing_after(tmp_path):
    ports = [free_port() for _ in range(3)]
    bus = "pub_port = {}\nsub_port = {}\ncontrol_port = {}\n".format(*ports)
    nodes = PLANS_TO_AN_SLM
    config = write_config(tmp_path, nodes, bus, "arm_on_start = true")
    proc, run_dir = start_loop(tmp_path, config)
    try:
        pids = {}
        wait_until(lambda: pids.update(node_pids(run_dir)) or pids, what="loop running")
        wait_until(lambda: (status(run_dir)["slm"]["stats"] or {}).get("fired", 0) > 2,
                   what="the armed SLM fires the plans")
        proc.kill()
        proc.wait(timeout=10)
        # Another process takes over the freed ports and asks for stimulations.
        proxy = Proxy(pub_port=ports[0], sub_port=ports[1])
        pub = Publisher(proxy.pub, "intruder")
        fired = Subscriber(proxy.sub, (STIM_FIRED,))
        try:
            wait_connected(pub, fired, "_hello.intruder")
            plans = 0
            while alive(pids["slm"]):
                pub.publish(STIM_PLAN, {"targets": np.array([plans % 5], np.int32),
                                        "power_mw": np.array([1.0], np.float32)})
                plans += 1
                assert fired.recv(timeout_ms=50) is None, "the orphaned SLM fired"
                assert plans < 400, "the orphaned SLM did not exit"
            assert fired.recv(timeout_ms=200) is None
        finally:
            for sock in (pub, fired):
                sock.close()
            proxy.close()
        wait_until(lambda: not any(alive(pid) for pid in pids.values()), timeout_s=30,
                   what="every node ends with its supervisor")
    finally:
        proc.kill()


def test_the_slm_disarms_itself_while_its_supervisor_is_silent(tmp_path):
    nodes = PLANS_TO_AN_SLM
    proc, run_dir = start_loop(tmp_path, write_config(tmp_path, nodes, run="arm_on_start = true"))
    log = run_dir / "logs" / "slm.log"
    try:
        wait_until(lambda: (status(run_dir).get("slm", {}).get("stats") or {}).get("fired", 0)
                   > 2, what="the armed SLM fires the plans")
        proc.send_signal(signal.SIGSTOP)  # alive but silent: hung, or stopped in a debugger
        try:
            wait_until(lambda: "disarmed" in log.read_text(), timeout_s=20,
                       what="the SLM disarms after deadman_s of silence")
        finally:
            proc.send_signal(signal.SIGCONT)
        slm = {}
        wait_until(lambda: slm.update(status(run_dir).get("slm", {})) or (
            slm.get("armed") is False and slm["counters"].get("deadman_disarms") == 1),
            what="the heartbeats after the silence say disarmed")
        fired = slm["stats"]["fired"]
        plans = status(run_dir)["planner"]["stats"]["plans"]
        wait_until(lambda: status(run_dir)["planner"]["stats"]["plans"] > plans + 10,
                   what="plans keep coming")
        assert status(run_dir)["slm"]["stats"]["fired"] == fired  # and none fires
    finally:
        proc.kill()
