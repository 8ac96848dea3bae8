"""The node runtime: every part of the loop is a ``Node`` running in its own process.

Write a node by subclassing ``Node``::

    class Decoder(Node):
        class Settings(msgspec.Struct, forbid_unknown_fields=True):
            window: int = 64                  # frames of context

        subscribe = ("traces",)               # topic prefixes to receive
        step_interval_s = None                # or seconds between step() calls while running

        def setup(self): ...                  # open files, load models (self.settings.window)
        def on_message(self, msg): ...        # one decoded rig.messages.Message
        def step(self): ...                   # timed work, only while running
        def teardown(self): ...
        def stats(self) -> dict: ...          # live figures, sent with every heartbeat
        def summary(self) -> dict: ...        # closing figures for the run summary

and publish with ``self.publish(topic, arrays, meta, frame=i, t_acq_ns=t)``: carry the
frame index and acquisition time of the frame a result came from, so every hop's latency
is measured. ``self.running`` (START/PAUSE/RESUME/STOP) and ``self.armed`` (ARM/DISARM)
follow the control channel; other verbs reach ``on_control(verb, args)``. Only control
messages signed with the run's key (``sign_control``), naming this node's run, and newer
than the last from the same supervisor (and than the node's spawn) are obeyed: a peer on
the bus cannot arm the laser, nor replay an old ARM, nor an old run command a new one's
nodes. A handler that raises is logged with its traceback and counted; the node goes on.

Fail to off: the supervisor pings its nodes every heartbeat; a node that has not heard its
supervisor for ``deadman_s`` disarms itself (the SLM then fires nothing), and a node whose
parent process (the supervisor) is gone exits, even while still loading.
"""
from __future__ import annotations

import hashlib
import hmac
import importlib
import logging
import os
import signal
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import zmq

from rig.bus import Endpoints, Keys, Publisher, Subscriber, wait_connected
from rig.messages import (CONTROL, HEARTBEAT, HELLO, ControlMeta, Message, MessageError, Verb,
                          parse_meta)
from rig.telemetry import LatencyHistogram

SUPERVISOR = "supervisor"
CONTROL_HWM = 1000  # control messages queued per node; forged ones are refused in µs


class NoSettings(msgspec.Struct, forbid_unknown_fields=True):
    pass


@dataclass(frozen=True)
class NodeSpec:
    """Everything a node process needs, as plain picklable data (processes are spawned)."""

    name: str
    cls: str  # "package.module:ClassName"
    settings: dict
    endpoints: Endpoints
    run_dir: str
    seed: int = 0
    hwm: int = 1000
    keys: Keys | None = None
    heartbeat_s: float = 0.5
    log_level: str = "INFO"
    extra: dict = field(default_factory=dict)  # run-wide facts (duration, sim flag)
    control_key: bytes = b""  # signs control messages; handed over at spawn, never sent
    not_before_ns: int = 0  # control signed before this (spawn) time is refused as a replay
    run_id: str = ""  # the run whose control this node obeys
    deadman_s: float = 3.0  # disarm when the supervisor has been silent this long
    parent_pid: int = 0  # the supervisor's process: the node exits when it is gone


def sign_control(key: bytes, meta: dict) -> str:
    """HMAC of a control message's sender, verb, target, args, time and run: only holders of
    the run's key (the supervisors, the nodes they spawned, and ``rig ctl`` with the run's
    secret file) can arm or command a node."""
    body = msgspec.msgpack.encode([meta["sender"], meta["verb"], meta["target"], meta["args"],
                                   meta["t_ns"], meta.get("run", "")])
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign_meta(key: bytes, meta: dict) -> str:
    """HMAC of a message's ``meta`` (all but its ``mac``) with the run's key: heartbeats are
    signed so that nobody else on the bus can report a node's state to its supervisor."""
    body = msgspec.msgpack.encode({k: v for k, v in meta.items() if k != "mac"})
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def load_class(path: str) -> type:
    """Import ``"package.module:ClassName"``; errors say which part is wrong."""
    module_name, _, class_name = path.partition(":")
    if not class_name:
        raise ValueError(f"node class {path!r} must look like 'package.module:ClassName'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ValueError(f"module {module_name} has no class {class_name}") from None


class Node:
    Settings: type = NoSettings
    subscribe: tuple[str, ...] = ()
    step_interval_s: float | None = None
    rcvhwm: int = 1000  # the recorder sets 0 (unbounded): it must lose nothing
    pausable: bool = True  # False: runs (steps) from start-up to shutdown, whatever the loop does

    def __init__(self, spec: NodeSpec, pub: Publisher | None = None):
        self.spec = spec
        self.name = spec.name
        self.settings = msgspec.convert(spec.settings, self.Settings)
        self.run_dir = Path(spec.run_dir)
        self.seed = spec.seed
        self.log = logging.getLogger(f"rig.{spec.name}")
        self.running = not self.pausable
        self.armed = False
        self._pub = pub
        self.counters: dict[str, Any] = defaultdict(int)
        self.latency: dict[str, dict[str, LatencyHistogram]] = defaultdict(
            lambda: {"hop": LatencyHistogram(), "age": LatencyHistogram()})
        self.handler_time = LatencyHistogram()
        # Newest control time accepted per sender (one supervisor per machine): older or
        # equal is a replay. A restarted node starts at its spawn time.
        self._last_control_ns: dict[str, int] = defaultdict(lambda: spec.not_before_ns)
        # When a genuine control message (a ping at least every heartbeat) last arrived
        # (monotonic s); None until the runtime's loop starts: a node driven in-process by a
        # test has no supervisor to hear.
        self._heard_supervisor: float | None = None

    # -- to override -------------------------------------------------------------------
    def setup(self) -> None:
        pass

    def on_message(self, msg: Message) -> None:
        pass

    def step(self) -> None:
        pass

    def on_control(self, verb: Verb, args: dict) -> None:
        pass

    def teardown(self) -> None:
        pass

    def stats(self) -> dict:
        return {}

    def summary(self) -> dict:
        return {}

    # -- for subclasses ----------------------------------------------------------------
    def publish(self, topic: str, arrays=None, meta=None, frame: int = -1,
                t_acq_ns: int = 0) -> None:
        self._pub.publish(topic, arrays, meta, frame, t_acq_ns)
        self.counters["msgs_out"] += 1

    def ask_supervisor_to_stop(self, why: str) -> None:
        """Ask this run's supervisor, signed with the run's key, to end the run (a file
        source that has ended); logged, not raised, if it does not answer."""
        from rig.control import send_control  # rig.control imports this module

        try:
            send_control(self.spec.endpoints.control, Verb.STOP, keys=self.spec.keys,
                         secret=self.spec.control_key)
        except (TimeoutError, zmq.ZMQError) as exc:
            self.log.warning("%s but the supervisor did not answer the stop: %s", why, exc)

    def thread_publisher(self, tag: str, hwm: int | None = None) -> Publisher:
        """A publisher of this node's own for a worker thread (zmq sockets are not thread-safe:
        heartbeats leave from the runtime's socket), connected before it is returned."""
        pub = Publisher(self.spec.endpoints.pub, self.name,
                        self.spec.hwm if hwm is None else hwm, self.spec.keys)
        probe = Subscriber(self.spec.endpoints.sub, (), self.spec.hwm, self.spec.keys)
        try:
            wait_connected(pub, probe, f"{HELLO}.{self.name}.{tag}")
        finally:
            probe.close()
        return pub

    # -- runtime -----------------------------------------------------------------------
    def _record_latency(self, msg: Message) -> None:
        now = time.time_ns()
        hist = self.latency[msg.topic]
        hist["hop"].add(now - msg.t_send_ns)
        if msg.t_acq_ns:
            hist["age"].add(now - msg.t_acq_ns)

    def _guarded(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # a handler's bug must not stop the loop: log, count, go on
            self.counters["errors"] += 1
            self.counters["last_error"] = traceback.format_exc(limit=3)
            self.log.exception("%s failed", what)

    def _handle_control(self, msg: Message) -> bool:
        """Apply a control message; True when the node should exit."""
        control = self._genuine_control(msg)
        if control is None:
            self.counters["control_refused"] += 1
            self.log.warning("ignored control from %r: not signed by this run's supervisor, "
                             "another run's, or replayed", msg.source)
            return False
        if self._heard_supervisor is not None:
            self._heard_supervisor = time.monotonic()
        verb = control.verb
        if control.target not in ("*", self.name) or verb is Verb.PING:
            return False
        if verb in (Verb.START, Verb.RESUME):
            self.running = True
        elif verb in (Verb.PAUSE, Verb.STOP):
            self.running = not self.pausable
        elif verb is Verb.ARM:
            self.armed = True
        elif verb is Verb.DISARM:
            self.armed = False
        elif verb is Verb.SHUTDOWN:
            return True
        self._guarded(f"on_control({verb.value})", self.on_control, verb, control.args)
        return False

    def _genuine_control(self, msg: Message) -> ControlMeta | None:
        """The control message's meta if it is signed by this run's key, names this run and
        is newer than the last from its sender; else None."""
        try:
            control = parse_meta(msg.meta, ControlMeta)
            expected = sign_control(self.spec.control_key, msg.meta)
        except (ValueError, TypeError, OverflowError):  # MessageError is a ValueError
            return None
        if not hmac.compare_digest(expected, control.mac) or control.run != self.spec.run_id:
            return None
        if control.t_ns <= self._last_control_ns[control.sender]:
            return None
        self._last_control_ns[control.sender] = control.t_ns
        return control

    def _check_deadman(self) -> None:
        """Disarm when the supervisor has been silent for ``deadman_s`` or its process is
        gone (fail to off). Called before every data handler: cheap (one clock read, one
        getppid)."""
        if not self.armed or self._heard_supervisor is None:
            return
        if time.monotonic() - self._heard_supervisor > self.spec.deadman_s:
            why = f"supervisor silent for more than {self.spec.deadman_s:g} s"
        elif _orphaned(self.spec.parent_pid):
            why = "supervisor process gone"
        else:
            return
        self.armed = False
        self.counters["deadman_disarms"] += 1
        self.log.error("%s: disarmed", why)
        self._guarded("on_control(disarm)", self.on_control, Verb.DISARM, {})

    def _dispatch(self, msg: Message | None) -> bool:
        """Handle one received message (None: malformed, already counted); True to exit."""
        if msg is None:
            return False
        if msg.topic == CONTROL:
            return self._handle_control(msg)
        self._check_deadman()  # before any handler that might act on being armed
        self._record_latency(msg)
        t0 = time.perf_counter_ns()
        self._guarded(f"on_message({msg.topic})", self.on_message, msg)
        self.handler_time.add(time.perf_counter_ns() - t0)
        return False

    def heartbeat(self, sub: Subscriber, status: str, control: Subscriber | None = None) -> None:
        """Publish this node's status, counters and latencies (``sub``: its data subscriber;
        ``control``: its control subscriber, whose malformed input is counted too)."""
        counters = {k: v for k, v in self.counters.items() if k != "last_error"}
        subs = (sub,) if control is None else (sub, control)
        meta = {
            "status": status, "running": self.running, "armed": self.armed,
            "msgs_in": sub.received,
            "malformed": sum(s.malformed for s in subs) + counters.pop("malformed", 0),
            "drops": dict(sub.drops), "counters": counters,
            "last_error": self.counters.get("last_error", "") or next(
                (s.last_error for s in subs if s.last_error), ""),
            "handler": self.handler_time.to_wire(),
            "latency": {t: {k: h.to_wire() for k, h in d.items()} for t, d in self.latency.items()},
            "run": self.spec.run_id,
        }
        self._guarded("stats", lambda: meta.__setitem__("stats", self.stats()))
        if status == "exited":
            self._guarded("summary", lambda: meta.__setitem__("summary", self.summary()))
        try:
            self._publish_signed(meta)
        except (MessageError, TypeError) as exc:  # a numpy scalar in stats(): say so, go on
            self.counters["errors"] += 1
            self.log.error("heartbeat: %s", exc)
            meta.pop("stats", None)
            meta.pop("summary", None)
            meta["last_error"] = f"stats()/summary() not sendable: {exc}"
            self._publish_signed(meta)

    def _publish_signed(self, meta: dict) -> None:
        meta["mac"] = sign_meta(self.spec.control_key, meta)
        self._pub.publish(HEARTBEAT, meta=meta)


def _configure_logging(spec: NodeSpec) -> None:
    log_dir = Path(spec.run_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.handlers.clear()
    for handler in (logging.StreamHandler(), logging.FileHandler(log_dir / f"{spec.name}.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(spec.log_level)


def run_node(spec: NodeSpec) -> None:
    """Entry point of a node process (``multiprocessing`` spawn target)."""
    _configure_logging(spec)
    log = logging.getLogger(f"rig.{spec.name}")
    stop = False
    looping = False

    def on_term(*_):
        nonlocal stop
        stop = True
        if not looping:  # still loading (a model, a device): abandon it, do not wait
            raise SystemExit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    node = None

    def on_orphaned():
        nonlocal stop
        stop = True
        if node is not None:
            node.armed = False  # at once; the handlers follow it before acting
        log.error("the supervisor (pid %d) is gone: exiting", spec.parent_pid)

    watcher = _watch_parent(spec.parent_pid, on_orphaned)
    cls = load_class(spec.cls)
    pub = Publisher(spec.endpoints.pub, spec.name, spec.hwm, spec.keys)
    node = cls(spec, pub)
    # Control has a socket of its own, read before every data message: a data flood can
    # neither delay a DISARM nor push it out of a full queue.
    control = Subscriber(spec.endpoints.sub, (CONTROL,), CONTROL_HWM, spec.keys)
    sub = Subscriber(spec.endpoints.sub, cls.subscribe, cls.rcvhwm, spec.keys)
    poller = zmq.Poller()
    for socket in (control.sock, sub.sock):
        poller.register(socket, zmq.POLLIN)
    try:
        wait_connected(pub, control, f"{HELLO}.{spec.name}.control")
        wait_connected(pub, sub, f"{HELLO}.{spec.name}")
        node.setup()
        node.heartbeat(sub, "ready", control)
        looping = True
        node._heard_supervisor = time.monotonic()
        interval = node.step_interval_s
        next_step = time.monotonic()
        next_beat = time.monotonic() + spec.heartbeat_s
        while not stop:
            now = time.monotonic()
            node._check_deadman()
            if now >= next_beat:
                node.heartbeat(sub, "running" if node.running else "idle", control)
                next_beat = now + spec.heartbeat_s
            if node.running and interval is not None and now >= next_step:
                t0 = time.perf_counter_ns()
                node._guarded("step", node.step)
                node.handler_time.add(time.perf_counter_ns() - t0)
                # Fall behind by more than a step: skip ahead rather than burst to catch up.
                next_step = max(next_step + interval, time.monotonic() - interval)
                now = time.monotonic()
            due = [next_beat]
            if node.running and interval is not None:
                due.append(next_step)
            timeout_ms = max(0, int((min(due) - now) * 1000))
            if not poller.poll(timeout_ms):
                continue
            # Drain what has arrived, but stop once a heartbeat or a step is due (after at
            # least one message): a slow handler must not silence the node or starve steps.
            deadline = min(due)
            while not stop:
                source, frames = _next_frames(control, sub)
                if source is None:
                    break
                msg = source.accept(frames)
                if source is sub and msg is not None and msg.topic == CONTROL:
                    continue  # a node subscribed to everything: control has its own socket
                stop = node._dispatch(msg) or stop
                if time.monotonic() >= deadline:
                    break
    finally:
        looping = True  # a SIGTERM now only asks; teardown runs to its end
        watcher.set()  # nor is an orphan's teardown cut short (a recorder closing its file)
        node.armed = False
        node._guarded("teardown", node.teardown)
        node.heartbeat(sub, "exited", control)
        log.info("exited")
        pub.sock.close(linger=1000)  # let the final heartbeat leave, but never hang on exit
        sub.close()
        control.close()


def _next_frames(control: Subscriber, sub: Subscriber):
    """(subscriber, frames) of the next message, control first; (None, None) if none."""
    for source in (control, sub):
        try:
            return source, source.sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            continue
    return None, None


def _orphaned(parent_pid: int) -> bool:
    """True once the supervisor's process is gone (this process was re-parented)."""
    return bool(parent_pid) and os.getppid() != parent_pid


def _watch_parent(parent_pid: int, on_orphaned, grace_s: float = 3.0) -> threading.Event:
    """Call ``on_orphaned`` once the parent process is gone (this process was re-parented),
    then end the process unless the watch is stopped within ``grace_s`` (it is once the
    node's loop has ended; a node stuck loading a model is ended). Returns the event that
    stops the watch."""
    done = threading.Event()

    def watch():
        while not done.wait(0.2):
            if _orphaned(parent_pid):
                on_orphaned()
                if not done.wait(grace_s):
                    os._exit(1)
                return

    threading.Thread(target=watch, name="rig-parent-watch", daemon=True).start()
    return done
