"""The supervisor: starts the proxy and the nodes of a config, watches, restarts, stops.

It spawns every node as its own process (``spawn``, never ``fork``: improv#32), waits for
each to report ready, then starts the loop. It listens to heartbeats (status, counters,
latency histograms), restarts a node that dies or falls silent (a bounded number of times,
then stops the loop and says why), answers the control channel (a ROUTER socket) and on
Ctrl-C, SIGTERM, ``stop`` or the end of the run shuts everything down within 2 s.

It trusts nothing it receives: heartbeats are validated (``rig.messages.HeartbeatMeta``) and
dropped with a count if malformed, unsigned or from another run; control requests must be signed with
the run's secret, which it writes to ``RUN_DIR/control.secret`` (mode 0600) for ``rig ctl``
and the dashboard (``rig.control.read_run_secret``). It answers control before it reads heartbeats and
reads a bounded number of those per poll, so a flood cannot silence the control channel.
It pings its nodes every heartbeat; they disarm when the pings stop (``rig.node``).
"""
from __future__ import annotations

import hmac
import json
import logging
import multiprocessing as mp
import os
import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import msgspec
import zmq

from rig import __version__
from rig.bus import Endpoints, Keys, Proxy, Publisher, Subscriber, secure_server, wait_connected
from rig.config import Config
# send_control is also imported from here by the dashboard and the replay node
from rig.control import SECRET_FILE, derived_secret, send_control, write_run_secret
from rig.messages import (CONTROL, HEARTBEAT, HELLO, ControlRequest, HeartbeatMeta,
                          MessageError, Verb, parse_meta, verb_args)
from rig.node import SUPERVISOR, NodeSpec, run_node, sign_control, sign_meta
from rig.recording.files import atomic_write_bytes
from rig.telemetry import LatencyHistogram

log = logging.getLogger("rig.supervisor")

HEARTBEATS_PER_POLL = 200  # then control is answered again: a flood cannot starve it
CONTROL_PER_POLL = 20
CONTROL_MAX_AGE_S = 30.0  # a signed request older (or newer) than this is refused
MAX_REQUEST_BYTES = 1 << 20
# Shut down after every other node, so that it records all they sent.
RECORDER_CLASS = "rig.recording.recorder:Recorder"


class LoopError(RuntimeError):
    """The loop cannot go on (a node keeps dying, never becomes ready, ...)."""


@dataclass
class NodeState:
    spec: NodeSpec
    process: mp.Process | None = None
    restarts: int = 0
    status: str = "starting"
    last_beat: float = 0.0
    start_when_ready: bool = False  # a node restarted in a running loop rejoins it
    beat: dict = field(default_factory=dict)  # the latest heartbeat's meta


class Supervisor:
    def __init__(self, config: Config, machine: str = "local", run_dir: str | Path | None = None,
                 attach: Endpoints | None = None):
        self.config = config
        self.machine = machine
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir or Path(config.run.out_dir) / f"{config.run.name}-{stamp}")
        self.attach = attach
        self.nodes: dict[str, NodeState] = {}
        self.stop_reason = ""
        self._stop = False
        self._ctx = mp.get_context("spawn")
        self.proxy: Proxy | None = None
        self.pub: Publisher | None = None
        self.sub: Subscriber | None = None
        self.control: zmq.Socket | None = None
        self.started_at = 0.0
        self.armed = self.running = False  # what the loop was last told, for restarted nodes
        self._last_t_ns = 0
        self._closed = False
        self.node_failed = False  # a node used up its restarts: the run failed
        self.run_id = secrets.token_hex(8)  # an attached supervisor takes the bus owner's
        self.rejected = {"heartbeats": 0, "control": 0}  # malformed, forged or foreign input
        self._seen_macs: deque[str] = deque(maxlen=10_000)  # recent requests: no replays
        self._next_ping = 0.0
        self._signals: dict = {}  # previous handlers, restored at shutdown
        self._last_warning = 0.0

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the proxy (unless attached) and the nodes; wait until all are ready.

        From here until ``shutdown``, SIGINT and SIGTERM stop the loop (also during start-up:
        ``LoopError``), so the summary is still written and no node outlives its run.
        """
        self._catch_signals()
        self._open_bus()  # first: a busy port or missing keys leaves no half-made run folder
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _add_file_log(self.run_dir / "logs" / "supervisor.log")
        (self.run_dir / "config.json").write_bytes(msgspec.json.encode(
            {"source": self.config.source, "config": self.config.raw, "rig": __version__}))
        write_run_secret(self.run_dir, self.control_key)
        bus = self.config.bus
        (self.run_dir / "endpoints.json").write_text(json.dumps(self.endpoints.__dict__))
        self.pub = Publisher(self.endpoints.pub, SUPERVISOR, bus.hwm, self.keys)
        # Bounded: a flood of forged heartbeats is dropped, never queued without limit.
        self.sub = Subscriber(self.endpoints.sub, (HEARTBEAT,), 1000, self.keys)
        wait_connected(self.pub, self.sub, f"{HELLO}.supervisor")
        run = self.config.run
        for entry in self.config.nodes_on(self.machine):
            spec = NodeSpec(entry.name, entry.cls, entry.settings, self.endpoints,
                            str(self.run_dir), run.seed, bus.hwm, self.keys, run.heartbeat_s,
                            run.log_level, {"duration_s": run.duration_s}, self.control_key,
                            run_id=self.run_id, deadman_s=run.deadman_s,
                            parent_pid=os.getpid())
            self.nodes[entry.name] = NodeState(spec)
            self._spawn(self.nodes[entry.name])
        self._wait_ready()
        self.started_at = time.monotonic()
        if run.arm_on_start:
            self.command(Verb.ARM)
        self.command(Verb.START)
        log.info("loop started: %d node(s), run folder %s", len(self.nodes), self.run_dir)

    def _open_bus(self) -> None:
        """Bind the proxy and the control socket (or join the bus owner's run); ``OSError``
        says which port is taken or which key is missing."""
        bus = self.config.bus
        self.keys = (Keys(str(Path(bus.keys_dir).expanduser()), bus.client_name)
                     if bus.curve else None)
        # The control key: per run on one machine; across machines (CURVE, keys copied to
        # each) derived from the shared server key, so every supervisor can command.
        self.control_key = derived_secret(self.keys) if self.keys else secrets.token_bytes(32)
        if self.attach is not None:
            self.endpoints = self.attach
            # Join the bus owner's run: its nodes and ours obey the same run id.
            reply = send_control(self.attach.control, Verb.STATUS, keys=self.keys,
                                 secret=self.control_key)
            self.run_id = str(reply.get("run") or self.run_id)
            return
        self.proxy = Proxy(bus.host, bus.pub_port, bus.sub_port, bus.hwm, self.keys,
                           bus.transport, str(self.run_dir / "ipc"))
        self.control = zmq.Context.instance().socket(zmq.ROUTER)
        self.control.linger = 0
        self.control.maxmsgsize = MAX_REQUEST_BYTES
        secure_server(self.control, self.keys)
        host = f"[{bus.host}]" if ":" in bus.host else bus.host
        try:
            if bus.transport == "ipc":
                self.control.bind(f"ipc://{self.run_dir / 'ipc' / 'control'}")
            else:
                self.control.bind(f"tcp://{host}:{bus.control_port or '*'}")
        except zmq.ZMQError as exc:
            raise OSError(f"cannot bind the control socket to {host}:{bus.control_port} "
                          f"({exc}); another Rig may be running, or set the port to 0"
                          ) from None
        self.endpoints = Endpoints(self.proxy.pub, self.proxy.sub,
                                   self.control.last_endpoint.decode())

    def _spawn(self, state: NodeState) -> None:
        state.spec = replace(state.spec, not_before_ns=time.time_ns())
        state.process = self._ctx.Process(target=run_node, args=(state.spec,),
                                          name=f"rig-{state.spec.name}", daemon=True)
        state.process.start()
        state.status = "starting"
        state.last_beat = time.monotonic()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.run.ready_timeout_s
        while any(s.status == "starting" for s in self.nodes.values()):
            if self._stop:
                raise LoopError(f"stopped during start-up ({self.stop_reason})")
            if time.monotonic() > deadline:
                late = [n for n, s in self.nodes.items() if s.status == "starting"]
                raise LoopError(f"node(s) {late} not ready after "
                                f"{self.config.run.ready_timeout_s:.0f} s: see their logs in "
                                f"{self.run_dir / 'logs'}")
            self._poll(200)
            self._check_processes(starting=True)

    # -- run -----------------------------------------------------------------------------
    def command(self, verb: Verb, target: str = "*", args: dict | None = None) -> None:
        """Send a control verb to one node or all (``*``) over the bus.

        An attached supervisor's ``*`` means its own nodes only, never another machine's.
        """
        if target == "*":
            if verb in (Verb.ARM, Verb.DISARM):
                self.armed = verb is Verb.ARM
            elif verb in (Verb.START, Verb.RESUME, Verb.PAUSE, Verb.STOP):
                self.running = verb in (Verb.START, Verb.RESUME)
        targets = list(self.nodes) if target == "*" and self.attach is not None else [target]
        for name in targets:
            # Strictly increasing even if the wall clock steps back: nodes refuse old times.
            self._last_t_ns = max(time.time_ns(), self._last_t_ns + 1)
            meta = {"sender": self.machine, "verb": verb.value, "target": name,
                    "args": args or {}, "t_ns": self._last_t_ns, "run": self.run_id}
            meta["mac"] = sign_control(self.control_key, meta)
            self.pub.publish(CONTROL, meta=meta)

    def run(self, duration_s: float | None = None, on_progress=None) -> None:
        """Supervise until the duration ends, a stop/shutdown arrives, or Ctrl-C."""
        duration_s = self.config.run.duration_s if duration_s is None else duration_s
        next_progress = time.monotonic() + 2.0
        while not self._stop:
            now = time.monotonic()
            if duration_s and now - self.started_at >= duration_s:
                self.stop_reason = self.stop_reason or f"duration {duration_s:g} s reached"
                break
            self._poll(100)
            self._check_processes()
            if on_progress and now >= next_progress:
                on_progress(self)
                next_progress = now + 2.0

    def wait_for(self, condition, timeout_s: float = 30.0) -> bool:
        """Supervise until ``condition(self)`` holds (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() > deadline or self._stop:
                return False
            self._poll(50)
            self._check_processes()
        return True

    def stats(self, node: str) -> dict:
        """The latest live figures a node reported (its ``stats()``)."""
        return self.nodes[node].beat.get("stats") or {}

    def _catch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._signals:
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._signals[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.stop_reason = self.stop_reason or ("Ctrl-C" if signum == signal.SIGINT else
                                                signal.Signals(signum).name)
        self._stop = True

    def _poll(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for heartbeats or control requests and handle them;
        ping the nodes when a heartbeat interval has passed."""
        if self.nodes and not self._closed:
            now = time.monotonic()
            if now >= self._next_ping:
                self._next_ping = now + self.config.run.heartbeat_s
                self.command(Verb.PING)
            timeout_ms = min(timeout_ms, max(0, int((self._next_ping - now) * 1000)))
        poller = zmq.Poller()
        poller.register(self.sub.sock, zmq.POLLIN)
        if self.control is not None:
            poller.register(self.control, zmq.POLLIN)
        events = dict(poller.poll(timeout_ms))
        if self.control is not None and self.control in events:
            for _ in range(CONTROL_PER_POLL):
                if not self.control.poll(0):
                    break
                self._on_control_request()
        if self.sub.sock in events:
            for _ in range(HEARTBEATS_PER_POLL):
                if not self.sub.sock.poll(0):
                    break
                if (msg := self.sub.recv()) is not None:
                    self._on_heartbeat(msg)

    def _reject(self, kind: str, why: str) -> None:
        """Count refused input; log it at most once a second (a flood must not fill the log)."""
        self.rejected[kind] += 1
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            log.warning("refused %s (%d so far): %s", kind.rstrip("s"), self.rejected[kind], why)

    def _on_heartbeat(self, msg) -> None:
        state = self.nodes.get(msg.source)
        if state is None:
            return  # a node of another machine, or a stale process
        try:
            beat = parse_meta(msg.meta, HeartbeatMeta)
        except MessageError as exc:
            self._reject("heartbeats", f"from {msg.source!r}: {exc}")
            return
        if beat.run != self.run_id:
            self._reject("heartbeats", f"from {msg.source!r} of another run ({beat.run!r})")
            return
        try:
            genuine = hmac.compare_digest(sign_meta(self.control_key, msg.meta), beat.mac)
        except (TypeError, OverflowError):  # not what msgpack could have carried
            genuine = False
        if not genuine:
            self._reject("heartbeats", f"from {msg.source!r} not signed with the run's key")
            return
        state.beat = msg.meta
        state.status = beat.status
        state.last_beat = time.monotonic()
        # "idle" too: the one "ready" beat may have been dropped.
        if state.start_when_ready and state.status in ("ready", "idle"):
            state.start_when_ready = False
            if self.armed:  # as the loop is now, not as it started (a DISARM holds)
                self.command(Verb.ARM, msg.source)
            if self.running:
                self.command(Verb.START, msg.source)

    def _on_control_request(self) -> None:
        identity, *parts = self.control.recv_multipart()
        try:
            reply = self._answer(parts[-1] if parts else b"")
        except (MessageError, ValueError) as exc:
            self._reject("control", str(exc))
            reply = {"ok": False, "error": str(exc)}
        self.control.send_multipart([identity, *parts[:-1],
                                     msgspec.json.encode(reply, enc_hook=str)])

    def _answer(self, body: bytes) -> dict:
        """The reply to one control request; ``ValueError`` says why it is refused."""
        try:
            request = msgspec.json.decode(body, type=ControlRequest)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise ValueError(f"bad request ({exc}); expected JSON {{\"verb\": one of "
                             f"{[v.value for v in Verb if v is not Verb.PING]}, \"target\", "
                             "\"args\"}, signed with the run's secret") from None
        args = verb_args(request.verb, request.args)
        self._check_signed(request)
        verb, target = request.verb, request.target
        if verb is Verb.PING:
            raise ValueError("ping is the supervisor's own verb")
        if target != "*" and target not in self.config.nodes:
            raise ValueError(f"unknown target {target!r}: one of {sorted(self.config.nodes)} "
                             "or '*' (all)")
        reply = {"ok": True, "verb": verb.value, "run": self.run_id}
        if verb is Verb.STATUS:
            reply["status"] = self.status()
        elif verb is Verb.SHUTDOWN:
            self.stop_reason = "shutdown requested on the control channel"
            self._stop = True
        else:
            if verb is Verb.STOP and target == "*":
                self.stop_reason = "stop requested on the control channel"
                self._stop = True
            self.command(verb, target, args)
        return reply

    def _check_signed(self, request: ControlRequest) -> None:
        """Signed with the run's secret, recent, and not seen before; else ``ValueError``."""
        meta = {"sender": request.sender, "verb": request.verb.value, "target": request.target,
                "args": request.args, "t_ns": request.t_ns}
        if not request.mac:
            raise ValueError("unsigned request refused: sign it with the run's secret "
                             f"({self.run_dir / SECRET_FILE}; rig ctl --run RUN_DIR)")
        expected = sign_control(self.control_key, meta)
        if not hmac.compare_digest(expected, request.mac):
            raise ValueError("request not signed with this run's secret: refused")
        if abs(time.time_ns() - request.t_ns) > CONTROL_MAX_AGE_S * 1e9:
            raise ValueError(f"request signed more than {CONTROL_MAX_AGE_S:g} s from now: "
                             "refused (replayed, or the clocks differ)")
        if request.mac in self._seen_macs:
            raise ValueError("request already received: a replay, refused")
        self._seen_macs.append(request.mac)

    def _check_processes(self, starting: bool = False) -> None:
        now = time.monotonic()
        for name, state in self.nodes.items():
            dead = not state.process.is_alive()
            silent = (not starting and state.status not in ("starting", "exited")
                      and now - state.last_beat > self.config.run.heartbeat_timeout_s)
            if not (dead or silent):
                continue
            why = f"exit code {state.process.exitcode}" if dead else \
                f"silent for {now - state.last_beat:.1f} s"
            if silent:
                state.process.kill()
                state.process.join(1)
            if state.restarts >= self.config.run.max_restarts:
                self.node_failed = True
                self.stop_reason = (f"node {name!r} failed {state.restarts + 1} times ({why}); "
                                    f"see {self.run_dir / 'logs' / (name + '.log')}")
                self._stop = True
                if starting:
                    raise LoopError(self.stop_reason)
                return
            state.restarts += 1
            log.error("node %r failed (%s): restart %d of %d", name, why, state.restarts,
                      self.config.run.max_restarts)
            self._spawn(state)
            state.start_when_ready = not starting

    # -- stop ----------------------------------------------------------------------------
    def shutdown(self, grace_s: float = 1.5, drain_s: float = 30.0) -> None:
        """Stop every node: ask, then SIGTERM, then SIGKILL. The recorder goes last, once
        everything that publishes has ended, with ``drain_s`` to write what is still queued
        for it and close its file; the others within ~2 s. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.pub is not None:
            self.command(Verb.STOP)
        last = [s for s in self.nodes.values() if s.spec.cls == RECORDER_CLASS]
        self._end([s for s in self.nodes.values() if s not in last], grace_s)
        self._end(last, drain_s)
        if self.sub is not None:
            self._poll(0)  # the last heartbeats carry the closing summaries
        for sock in (self.pub, self.sub):
            if sock is not None:
                sock.close()
        if self.control is not None:
            self.control.close(0)
        if self.proxy is not None:
            self.proxy.close()
        for signum, previous in self._signals.items():  # a signal until now only stopped us
            signal.signal(signum, previous)
        self._signals.clear()

    def _end(self, states: list[NodeState], grace_s: float) -> None:
        for state in states:
            if self.pub is not None:  # nodes exist only once pub and sub do
                self.command(Verb.SHUTDOWN, state.spec.name)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(s.process.is_alive() for s in states):
            self._poll(50)
        for state in states:
            if state.process.is_alive():
                log.warning("node %r did not exit in %.1f s: terminating", state.spec.name,
                            grace_s)
                state.process.terminate()
        for state in states:
            state.process.join(0.3)
            if state.process.is_alive():
                state.process.kill()
                state.process.join(0.2)

    # -- report --------------------------------------------------------------------------
    def status(self) -> dict:
        return {name: {"status": s.status, "restarts": s.restarts,
                       "alive": bool(s.process and s.process.is_alive()),
                       "pid": s.process.pid if s.process else None,
                       "handler": LatencyHistogram.from_wire(s.beat.get("handler", {})).summary(),
                       **{k: s.beat.get(k) for k in ("running", "armed", "msgs_in", "malformed",
                                                     "drops", "counters", "stats")}}
                for name, s in self.nodes.items()}

    def latency(self) -> dict:
        """{(node, topic, "hop"|"age"): LatencyHistogram} from the latest heartbeats."""
        out = {}
        for name, state in self.nodes.items():
            for topic, hists in state.beat.get("latency", {}).items():
                for kind, wire in hists.items():
                    out[(name, topic, kind)] = LatencyHistogram.from_wire(wire)
        return out

    def report(self) -> dict:
        report = {
            "run_dir": str(self.run_dir), "stop_reason": self.stop_reason,
            "duration_s": time.monotonic() - self.started_at if self.started_at else 0.0,
            "nodes": self.status(),
            "summaries": {n: s.beat.get("summary", {}) for n, s in self.nodes.items()},
            "latency": {f"{n}<-{t}:{k}": h.summary() for (n, t, k), h in self.latency().items()
                        if h.n},
        }
        report["rejected"] = dict(self.rejected)
        atomic_write_bytes(self.run_dir / "summary.json", msgspec.json.format(
            msgspec.json.encode(report, enc_hook=str)))
        return report


def _add_file_log(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
