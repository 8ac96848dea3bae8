"""The recorder node: every message on the bus, to one MCAP file per run, losing nothing.

It owns a subscriber of its own with an unbounded receive queue (``rcvhwm = 0``), read by a
thread that blocks on the socket, so a message is stamped when it arrives and written at
once; the node's main loop only answers control and sends heartbeats. Sequence gaps (a
publisher or the proxy dropped for it) are counted as errors and logged. The file is
flushed at least every ``flush_s`` seconds, so a SIGKILL loses at most that much.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated

import msgspec
import zmq

from rig.bus import Subscriber, wait_connected
from rig.node import Node, Verb
from rig.recording.format import RecordingWriter


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

    def setup(self):
        s = self.settings
        self.path = self._free_path(self.run_dir / s.file)
        self.writer = RecordingWriter(self.path, s.chunk_kib, s.compression)
        config = self.run_dir / "config.json"
        if config.is_file():
            self.writer.add_metadata("config", {"json": config.read_text()})
        self.writer.add_json("run", {"node": self.name, "seed": self.seed,
                                     **self.spec.extra})
        self.writer.flush()
        self.sub = Subscriber(self.spec.endpoints.sub, ("",), 0, self.spec.keys)
        wait_connected(self._pub, self.sub, f"_hello.{self.name}.data")
        self.exclude = ("_hello", *s.exclude)
        # The thread updates these keys while heartbeats read the dict: create them first.
        self.counters["errors"] += 0
        self.counters["last_error"] = ""
        self.recorded = 0
        self.recording = s.record_at_start  # read by the thread; set by RECORD
        self.skipped = 0  # received while recording was off
        self.per_topic: dict[str, int] = {}
        self.flushed = 0
        self.lost = 0
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

    def _record(self) -> None:
        sock = self.sub.sock
        interval = self.settings.flush_s
        next_flush = time.monotonic() + interval
        drain_until = None
        while True:
            if self._stop.is_set() and drain_until is None:
                # Shutdown came on the control socket; data sent before it may still be in
                # flight on this one. Take what arrives until 0.2 s of quiet (at most 1 s).
                drain_until = time.monotonic() + 1.0
            timeout_ms = max(0, int((next_flush - time.monotonic()) * 1000))
            timeout_ms = 200 if drain_until is not None else min(timeout_ms, 100)
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
                return
            if time.monotonic() >= next_flush:
                self.writer.flush()
                self.flushed = self.recorded
                next_flush = time.monotonic() + interval

    def _write(self, frames, received_ns: int) -> None:
        topic = bytes(frames[0].buffer).decode(errors="replace")
        if topic.startswith(self.exclude):
            return
        lost_before = self.sub.drops[topic]
        msg = self.sub.accept(frames)
        if msg is None:  # malformed: counted by the subscriber, not recorded
            return
        if not self.recording:
            self.skipped += 1
            return
        lost = self.sub.drops[topic] - lost_before
        if lost:
            self.lost += lost
            self.counters["errors"] += lost
            self.counters["last_error"] = f"recorder lost {lost} message(s) on {topic!r}"
            self.log.error("lost %d message(s) on %r from %r before seq %d", lost, topic,
                           msg.source, msg.seq)
        self.writer.add(topic, frames[1:], received_ns, msg.t_acq_ns or msg.t_send_ns, msg.seq)
        self.recorded += 1
        self.per_topic[topic] = self.per_topic.get(topic, 0) + 1

    def on_control(self, verb, args):
        if verb is Verb.RECORD:
            self.recording = bool(args.get("on", True))
            self.log.info("recording %s", "on" if self.recording else "off")

    def teardown(self):
        if not hasattr(self, "_thread") or self._stop.is_set():
            return  # never set up, or already closed
        self._stop.set()
        self._thread.join(timeout=2)
        self.writer.add_json("recorder", {"recorded": self.recorded, "lost": self.lost,
                                          "malformed": self.sub.malformed,
                                          "drops": dict(self.sub.drops)})
        for truth in sorted((self.run_dir / "truth").glob("*.npy")):
            # A simulator leaves ground truth in RUN_DIR/truth/ (written atomically via a
            # hidden temporary file, which is skipped).
            if not truth.name.startswith("."):
                self._attach(truth)
        self.writer.close()
        self.flushed = self.recorded
        self.sub.close()
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
                "topics": dict(self.per_topic),
                "MB": round(self.writer.bytes / 1e6, 2) if hasattr(self, "writer") else 0}

    def summary(self):
        return {"file": str(getattr(self, "path", "")), "messages recorded": self.recorded,
                "messages lost": self.lost, "MB": self.stats()["MB"]}

