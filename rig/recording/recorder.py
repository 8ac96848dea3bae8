"""The recorder node: every message on the bus, to one MCAP file per run, losing nothing
without saying so.

It owns a subscriber of its own with an unbounded receive queue (``rcvhwm = 0``), read by a
thread that blocks on the socket, so a message is stamped when it arrives and written at
once; the node's main loop only answers control and sends heartbeats. Losses are counted
from sequence numbers per source and topic, logged as errors and stored in the file.

The file is flushed at least every ``flush_s`` seconds, so a SIGKILL loses at most that
much; with each flush the sequence numbers written so far go to a small state file next to
the recording, so that a restarted recorder (which opens ``session-1.mcap``) counts and
reports the messages that fell between the two files. A writer that fails (a full disk)
fails the node: the supervisor restarts it and the gap is counted the same way. At shutdown
the supervisor stops the recorder last; it writes until its queue has been quiet for a
moment, then closes the file with its summary.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated

import msgspec
import zmq

from rig.bus import Subscriber, wait_connected
from rig.node import Node, Verb
from rig.recording.files import atomic_write_bytes
from rig.recording.format import RecordingWriter

QUIET_S = 0.2  # at shutdown: the queue is drained once nothing arrived for this long
DRAIN_MAX_S = 20.0  # ... or after this long (a publisher that never stops; the supervisor
# waits 30 s for the recorder)


class Recorder(Node):
    """Writes the whole bus to ``RUN_DIR/FILE`` (``session.mcap``; ``session-1.mcap``... after a
    restart, so a file already written is never touched)."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        file: str = "session.mcap"
        # at most this much is lost to a crash; checked with the config, before any start
        flush_s: Annotated[float, msgspec.Meta(gt=0, le=1.0)] = 0.5
        chunk_kib: int = 1024
        compression: str = "none"  # "zstd" costs CPU on a busy acquisition machine
        exclude: list[str] = []  # topic prefixes not to record (besides "_hello")
        record_at_start: bool = True  # False: wait for RECORD {"on": true} (dashboard button)

    rcvhwm = 0
    subscribe = ()  # the runtime's subscriber only carries control; data has its own socket
    step_interval_s = 0.1  # how soon a failed writer thread fails the node
    pausable = False  # it writes through pauses and stops, until shutdown

    def setup(self):
        s = self.settings
        self.path = self._free_path(self.run_dir / s.file)
        self.state_path = self.run_dir / f".{s.file}.seq.json"
        # (source, topic) -> next sequence number expected; a restart resumes the last file's
        self.next_seq: dict[tuple[str, str], int] = self._resume()
        self.writer = RecordingWriter(self.path, s.chunk_kib, s.compression)
        config = self.run_dir / "config.json"
        if config.is_file():
            self.writer.add_metadata("config", {"json": config.read_text()})
        self.writer.add_json("run", {"node": self.name, "seed": self.seed,
                                     **self.spec.extra})
        self.writer.flush()
        self.sub = Subscriber(self.spec.endpoints.sub, ("",), 0, self.spec.keys)
        wait_connected(self._pub, self.sub, f"_hello.{self.name}.data")
        self.acks = self.thread_publisher("acks")  # answers a replay's _sync (writer thread)
        self.exclude = ("_hello", "_sync", *s.exclude)
        # The thread updates these keys while heartbeats read the dict: create them first.
        self.counters["errors"] += 0
        self.counters["last_error"] = ""
        self.recorded = 0
        self.recording = s.record_at_start  # read by the thread; set by RECORD
        self.skipped = 0  # received while recording was off
        self.skipped_streams: dict[str, int] = {}  # "source topic" -> skipped on purpose
        self.per_topic: dict[str, int] = {}
        self.flushed = 0
        self.lost = 0
        self.failure = ""  # why the writer thread stopped, if it failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._record, name="rig-recorder", daemon=True)
        self._thread.start()
        self.log.info("recording to %s", self.path)

    @staticmethod
    def _free_path(path: Path) -> Path:
        n = 0
        candidate = path
        while candidate.exists():
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        return candidate

    def _resume(self) -> dict[tuple[str, str], int]:
        """The sequence numbers an earlier recorder of this run had flushed, if it died."""
        try:
            state = json.loads(self.state_path.read_text())
            streams = {(str(src), str(topic)): int(n) for src, topic, n in state["next"]}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError) as exc:
            self.log.error("cannot resume sequence numbers from %s (%s): losses while the "
                           "recorder restarted are not counted", self.state_path, exc)
            return {}
        self.log.warning("resuming after %s, which did not close: messages sent while the "
                         "recorder was down are counted as lost", state.get("file", "?"))
        return streams

    def _record(self) -> None:
        try:
            self._record_until_drained()
        except Exception as exc:  # not swallowed: any failure ends the node (step)
            self.failure = (f"recording stopped after {self.recorded} message(s), the "
                            f"{self.flushed} flushed before are kept in {self.path}: "
                            f"{exc or type(exc).__name__}")
            self.counters["errors"] += 1
            self.counters["last_error"] = self.failure
            self.log.exception("recorder: %s", self.failure)

    def _record_until_drained(self) -> None:
        sock = self.sub.sock
        interval = self.settings.flush_s
        next_flush = time.monotonic() + interval
        drain_until = None
        while True:
            if self._stop.is_set() and drain_until is None:
                # Shutdown: the sources have ended (the supervisor stops the recorder last),
                # but what they sent may still be queued. Write until the queue is quiet.
                drain_until = time.monotonic() + DRAIN_MAX_S
            timeout_ms = max(0, int((next_flush - time.monotonic()) * 1000))
            timeout_ms = int(QUIET_S * 1000) if drain_until is not None else min(timeout_ms, 100)
            if sock.poll(timeout_ms):
                for _ in range(1000):  # a batch, then check the flush deadline
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._write(frames, time.time_ns())
            elif drain_until is not None:
                return
            if drain_until is not None and time.monotonic() > drain_until:
                self.log.error("still receiving %.0f s after shutdown: closing the file; a "
                               "publisher did not stop", DRAIN_MAX_S)
                return
            if time.monotonic() >= next_flush:
                self._flush()
                next_flush = time.monotonic() + interval

    def _flush(self) -> None:
        self.writer.flush()
        self.flushed = self.recorded
        # A process death loses nothing of this file once written: no fsync needed per flush.
        atomic_write_bytes(self.state_path, json.dumps(
            {"file": self.path.name, "next": [[*key, n] for key, n in self.next_seq.items()]}
        ).encode(), durable=False)

    def _write(self, frames, received_ns: int) -> None:
        topic = bytes(frames[0].buffer).decode(errors="replace")
        if topic.startswith("_sync."):  # a replay asks: has all it sent before arrived?
            if (msg := self.sub.accept(frames)) is not None:
                self.acks.publish("_synced." + topic.removeprefix("_sync."),
                                  meta={"n": msg.meta.get("n")})
            return
        if topic.startswith(self.exclude):
            return
        msg = self.sub.accept(frames)
        if msg is None:  # malformed: counted by the subscriber, not recorded
            return
        key = (msg.source, topic)
        expected = self.next_seq.get(key)
        self.next_seq[key] = msg.seq + 1
        if not self.recording:
            self.skipped += 1
            stream = f"{msg.source} {topic}"
            self.skipped_streams[stream] = self.skipped_streams.get(stream, 0) + 1
            return
        lost = msg.seq - expected if expected is not None and msg.seq > expected else 0
        if lost:
            self.lost += lost
            self.counters["errors"] += lost
            self.counters["last_error"] = (f"recorder lost {lost} message(s) on {topic!r} "
                                           f"from {msg.source!r}")
            self.log.error("lost %d message(s) on %r from %r before seq %d", lost, topic,
                           msg.source, msg.seq)
        self.writer.add(topic, frames[1:], received_ns, msg.t_acq_ns or msg.t_send_ns, msg.seq)
        self.recorded += 1
        self.per_topic[topic] = self.per_topic.get(topic, 0) + 1

    def step(self):
        if self.failure:
            # A recorder that cannot write must not go on reporting "running": end the
            # process, so that the supervisor restarts it (into a new file) or stops the run.
            raise SystemExit(f"recorder: {self.failure}")

    def on_control(self, verb, args):
        if verb is Verb.RECORD:
            self.recording = bool(args.get("on", True))
            self.log.info("recording %s", "on" if self.recording else "off")

    def teardown(self):
        if not hasattr(self, "_thread") or self._stop.is_set():
            return  # never set up, or already closed
        self._stop.set()
        self._thread.join()  # drains, bounded by DRAIN_MAX_S
        if not self.failure:  # else the file keeps what was flushed: writing more would fail
            self._close_file()
        self.sub.close()
        self.acks.close()

    def _close_file(self) -> None:
        self.writer.add_json("recorder", {"recorded": self.recorded, "lost": self.lost,
                                          "malformed": self.sub.malformed,
                                          "skipped": self.skipped_streams})
        for truth in sorted((self.run_dir / "truth").glob("*.npy")):
            # A simulator leaves ground truth in RUN_DIR/truth/ (written atomically via a
            # hidden temporary file, which is skipped).
            if not truth.name.startswith("."):
                self._attach(truth)
        self.writer.close()
        self.flushed = self.recorded
        self.state_path.unlink(missing_ok=True)  # closed: nothing for a successor to resume
        self.log.info("recorded %d message(s) to %s", self.recorded, self.path)

    def _attach(self, path: Path) -> None:
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            self.log.error("not attaching %s: %s", path, exc)
            return
        self.writer.add_array(f"truth/{path.stem}", array)

    def stats(self):
        return {"recording": self.recording, "recorded": self.recorded,
                "flushed": self.flushed, "lost": self.lost, "skipped": self.skipped,
                "failure": getattr(self, "failure", ""), "topics": dict(self.per_topic),
                "MB": round(self.writer.bytes / 1e6, 2) if hasattr(self, "writer") else 0}

    def summary(self):
        return {"file": str(getattr(self, "path", "")), "messages recorded": self.recorded,
                "messages lost": self.lost, "MB": self.stats()["MB"],
                **({"failure": self.failure} if getattr(self, "failure", "") else {})}
