"""Replay: a recorded (or imported) session put back on the bus as if it were live.

The ``Replay`` node stands where the simulator or the microscope stands. It re-sends each
recorded message's own wire frames (array buffers, meta and sequence number byte-identical,
so drops are still counted per stream) with three header fields renewed: the source is
marked ``replay:<original source>`` (a replayed ``decoded`` never shares its sequence numbers
with the live decoder's), ``t_send_ns`` is the moment it is sent again and ``t_acq_ns`` keeps
its original distance before it, so every downstream latency figure is measured as live.

Timing follows the original send times divided by ``speed`` (``0`` = as fast as the bus
takes them). A thread of its own paces and sends on a publisher of its own, so pacing does
not wait on the node's control loop; PAUSE holds the clock, STOP ends the pass. Topics of
the original run's own machinery (heartbeats, control, logs) are never replayed: a replayed
STOP must not stop this run. Stimulation commands (``stim.plan``) are not replayed either,
unless ``resend_stim`` asks: an armed SLM in the replay's loop would fire them again. At the
end of a pass the replay waits until the recorder has received all it sent (and until it
has left its own socket), before it asks the run to stop; at max speed it also waits every
``SYNC_EVERY`` messages, since the proxy drops for a subscriber that falls too far behind.
So a replay is re-recorded whole at any speed.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import msgspec

from rig.bus import Subscriber, wait_connected
from rig.messages import CONTROL, HEARTBEAT, HELLO, LOG, STIM_PLAN, Header
from rig.node import Node, Verb
from rig.telemetry import LatencyHistogram

NEVER_REPLAYED = {HEARTBEAT, CONTROL, LOG}  # the loop's own, not the session's
STIM_COMMANDS = {STIM_PLAN}  # what an armed SLM fires: only with resend_stim
REPLAYED = "replay:"  # source prefix of a replayed message
SYNC_EVERY = 256  # at max speed, messages between the recorder's acknowledgements
FIRST_ACK_S = 2.0  # no acknowledgement this soon after the start: no recorder in the loop
_decoder = msgspec.msgpack.Decoder(Header)
_encoder = msgspec.msgpack.Encoder()


def open_messages(path: Path, session=None) -> Iterator[tuple[str, list]]:
    """(topic, frames) of a recording, or of a session read from a suite2p folder / NWB
    (pass ``session`` to replay one already read)."""
    from rig.recording.format import open_recording
    from rig.recording.sessions import read_session, session_messages

    path = Path(path)
    if session is None and is_recording(path):
        for entry in open_recording(path).entries():  # a run folder: all its files in order
            yield entry.topic, entry.frames
    else:
        for _, topic, frames in session_messages(session or read_session(path)):
            yield topic, frames


def is_recording(path: Path) -> bool:
    return path.suffix == ".mcap" or (path.is_dir() and any(path.glob("*.mcap")))


def renew_header(header: Header, now_ns: int) -> bytes:
    """``header`` re-encoded with send time ``now_ns`` and its acquisition time shifted alike,
    so latencies downstream are measured as live, and its source marked as replayed."""
    t_acq = now_ns - (header.t_send_ns - header.t_acq_ns) if header.t_acq_ns else 0
    source = header.source if header.source.startswith(REPLAYED) else REPLAYED + header.source
    return _encoder.encode(msgspec.structs.replace(header, source=source, t_send_ns=now_ns,
                                                   t_acq_ns=t_acq))


class Replay(Node):
    """Publishes a session file on the bus with its original timing, or faster."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        path: str = ""  # a .mcap recording, a run folder, a suite2p folder or an .nwb file
        speed: float = 1.0  # 1 = real time, N = N times faster, 0 = as fast as possible
        loop: bool = False
        topics: list[str] = []  # topic prefixes to replay; empty: all data topics
        stop_at_end: bool = True  # ask the supervisor to stop the run after the last message
        resend_stim: bool = False  # replay stim.plan too: an armed SLM would fire them again

    def setup(self):
        s = self.settings
        if not s.path:
            raise ValueError("replay: set path = the session to replay (rig replay SESSION)")
        if s.speed < 0:
            raise ValueError(f"replay speed = {s.speed}: must be >= 0 (0 = as fast as possible)")
        self.path = Path(s.path).expanduser()
        # An imported session (suite2p, NWB) is read once; a recording is streamed each pass.
        self.session = None
        if not is_recording(self.path):
            from rig.recording.sessions import read_session

            self.session = read_session(self.path)
        self._messages = open_messages(self.path, self.session)
        self._first = next(self._messages, None)  # fail here, before the run starts
        if self._first is None:
            raise ValueError(f"{self.path}: holds no messages to replay")
        # Its own publisher: heartbeats leave from the node's socket on the main thread.
        self.out = self.thread_publisher("replay", 0 if not s.speed else None)
        # The recorder's acknowledgements (flow control); used by the replay thread only.
        self.acks = Subscriber(self.spec.endpoints.sub, (f"_synced.{self.name}",),
                               self.spec.hwm, self.spec.keys)
        wait_connected(self.out, self.acks, f"_hello.{self.name}.acks")
        self.recorder_answers: bool | None = None  # None: not asked yet
        self.sent = 0
        self.passes = 0
        self.bytes = 0
        self.done = False
        self.lateness = LatencyHistogram()
        # The thread updates these while heartbeats read the dict: create the keys first.
        self.counters["errors"] += 0
        self.counters["msgs_out"] += 0
        self._go = threading.Event()
        self._quit = threading.Event()
        # The pacing thread must get the GIL back within ~0.5 ms of its due time, not after
        # CPython's default 5 ms switch interval while the main loop sends a heartbeat.
        sys.setswitchinterval(0.0005)
        self._thread = threading.Thread(target=self._run, name="rig-replay", daemon=True)
        self._thread.start()

    def on_control(self, verb, args):
        if verb in (Verb.START, Verb.RESUME):
            self._go.set()
        elif verb in (Verb.PAUSE, Verb.STOP):
            self._go.clear()
        elif verb is Verb.SET and args.get("key") == "seek":
            # Seconds from the session's first message; the pacing thread acts on it.
            seek = float(args.get("value"))
            if not seek >= 0:
                raise ValueError(f"replay seek {seek}: must be >= 0 s")
            self._seek_s = seek

    def _wanted(self, topic: str) -> bool:
        if topic in NEVER_REPLAYED or topic.startswith(HELLO):
            return False
        if topic in STIM_COMMANDS and not self.settings.resend_stim:
            return False
        return not self.settings.topics or topic.startswith(tuple(self.settings.topics))

    _seek_s = None  # a seek asked for (s from the first message), not yet done
    position_s = 0.0  # where the replay is, s from the first message
    _t0 = None  # the first message's original send time, ns

    def _run(self) -> None:
        try:
            skip_to = None
            while not self._quit.is_set():
                skip_to = self._pass(skip_to)
                if skip_to is None:
                    self.passes += 1
                    if not self.settings.loop or self._quit.is_set():
                        break
                self._messages = open_messages(self.path, self.session)  # again, or back
                self._first = None
            if not self._quit.is_set():
                self._sync()
                self._wait_delivered()
        except Exception:
            self.counters["errors"] += 1
            self.log.exception("replay of %s failed", self.path)
        self.done = True
        if self.settings.stop_at_end and not self._quit.is_set():
            self.ask_supervisor_to_stop("replay ended")

    def _pass(self, skip_to: int | None = None) -> int | None:
        """One pass from the start, skipping what was sent before ``skip_to`` (ns); returns
        the send time to seek back to when a seek backwards interrupts it, else None."""
        speed = self.settings.speed
        base_wall = base_t = None  # wall clock (s) and recorded send time (ns) of the start
        pending = [self._first] if self._first is not None else []
        for topic, frames in _chain(pending, self._messages):
            if not self._wanted(topic):
                continue
            header = _decoder.decode(frames[0])
            if self._t0 is None:
                self._t0 = header.t_send_ns
            if self._seek_s is not None:
                target = self._t0 + int(self._seek_s * 1e9)
                self._seek_s = None
                if target < header.t_send_ns:
                    return target  # back: start again from the top, skipping to there
                skip_to, base_wall, base_t = target, None, None  # forward: skip, re-pace
            if skip_to is not None and header.t_send_ns < skip_to:
                continue
            self.position_s = (header.t_send_ns - self._t0) / 1e9
            if not self._go.is_set():
                paused_at = time.monotonic()
                while not self._go.wait(0.2):
                    if self._quit.is_set():
                        return None
                if base_wall is not None:
                    base_wall += time.monotonic() - paused_at  # a pause holds the clock
            if self._quit.is_set():
                return None
            if self.recorder_answers is None or (not speed and self.sent % SYNC_EVERY == 0):
                self._sync()
            original_send = header.t_send_ns
            if base_t is None:
                base_wall, base_t = time.monotonic(), original_send
            if speed:
                due = base_wall + (original_send - base_t) / 1e9 / speed
                delay = due - time.monotonic()
                if delay > 0 and self._quit.wait(delay):
                    return None
                self.lateness.add(max(0, int((time.monotonic() - due) * 1e9)))
            self.out.sock.send_multipart(
                [topic.encode(), renew_header(header, time.time_ns()), *frames[1:]], copy=False)
            self.sent += 1
            self.counters["msgs_out"] += 1
            self.bytes += sum(memoryview(f).nbytes for f in frames)

    def _sync(self) -> None:
        """Wait until the recorder has received all sent so far (it answers ``_sync.NAME`` in
        order with ``_synced.NAME``). Asked first once the loop has started (every node is
        ready then); without an answer within FIRST_ACK_S there is no recorder to wait for."""
        if self.recorder_answers is False:
            return
        self.out.publish(f"_sync.{self.name}", meta={"n": self.sent})
        first = self.recorder_answers is None
        deadline = time.monotonic() + (FIRST_ACK_S if first else 60.0)
        while (left := deadline - time.monotonic()) > 0 and not self._quit.is_set():
            msg = self.acks.recv(timeout_ms=int(min(left, 0.2) * 1000) + 1)
            if msg is not None and msg.meta.get("n") == self.sent:
                self.recorder_answers = True
                return
        if first:
            self.recorder_answers = False
            self.log.info("no recorder acknowledges: replaying without waiting for one")
        elif not self._quit.is_set():
            self.counters["errors"] += 1
            self.log.error("the recorder did not acknowledge %d message(s) within 60 s",
                           self.sent)

    def _wait_delivered(self) -> None:
        """Return once everything sent has passed the proxy: a probe sent after it on the same
        socket comes back (zmq keeps one socket's order). Closing the socket sooner would drop
        what it still queues."""
        probe = Subscriber(self.spec.endpoints.sub, (), self.spec.hwm, self.spec.keys)
        try:
            wait_connected(self.out, probe, f"_hello.{self.name}.end", timeout_s=60.0)
        finally:
            probe.close()

    def teardown(self):
        if not hasattr(self, "_thread"):
            return
        self._quit.set()
        self._go.set()
        self._thread.join(timeout=2)
        self.out.sock.close(linger=500)
        self.acks.close()

    def stats(self):
        return {"sent": getattr(self, "sent", 0), "done": getattr(self, "done", False),
                "position_s": round(self.position_s, 2), "speed": self.settings.speed,
                "passes": getattr(self, "passes", 0),
                "late_p99_ms": self.lateness.percentile_ms(99) if hasattr(self, "lateness")
                and self.lateness.n else 0.0}

    def summary(self):
        return {"session": str(self.settings.path), "messages sent": getattr(self, "sent", 0),
                "MB sent": round(getattr(self, "bytes", 0) / 1e6, 2),
                "passes": getattr(self, "passes", 0), **({"lateness p99 ms": round(
                    self.lateness.percentile_ms(99), 3)} if self.settings.speed and
                    hasattr(self, "lateness") and self.lateness.n else {})}


def _chain(first: list, rest: Iterator):
    yield from first
    yield from rest
