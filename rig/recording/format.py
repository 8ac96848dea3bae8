"""The on-disk form of a Rig recording: one MCAP file, one channel per bus topic.

Each MCAP message holds the exact wire frames of one bus message (``rig.messages``) after
the topic, so replay re-sends the very bytes that were received::

    data = u32 n | u64 len[0] ... u64 len[n-1] | frame[0] ... frame[n-1]     (little-endian)
    frame[0] = msgpack header, frame[1:] = raw array buffers

The channel's topic is the bus topic, its message encoding ``rig.frames.v1``. ``log_time``
is when the recorder received the message, ``publish_time`` the acquisition time of the
frame it derives from (or its send time when it has none), ``sequence`` the bus sequence
number (mod 2**32). A metadata record ``rig`` (format version, library versions) opens
every file; ``config``, ``session`` and ``meta`` records and ``.npy`` attachments (ground
truth, neuron positions) carry what is not a stream.

Files are written chunked and flushed at least once a second, so a recorder killed with
SIGKILL leaves a file without its summary whose messages up to the last flush are read by
the streaming reader here (mcap#1220: the record size is capped by the file size, so a
corrupt length cannot ask for gigabytes).
"""
from __future__ import annotations

import io
import json
import logging
import os
import platform
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np

log = logging.getLogger(__name__)

PROFILE = "rig"
FORMAT = "rig-mcap"
FORMAT_VERSION = 1
MESSAGE_ENCODING = "rig.frames.v1"
_COUNT = struct.Struct("<I")


class RecordingError(ValueError):
    """A recording that cannot be read or written; the message names the file and problem."""


def pack_frames(frames) -> bytes:
    """Serialise wire frames (after the topic) into one MCAP message payload."""
    views = [memoryview(f.buffer if hasattr(f, "buffer") else f) for f in frames]
    head = _COUNT.pack(len(views)) + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))
    return b"".join([head, *views])


def unpack_frames(data) -> list[memoryview]:
    """The wire frames of one payload (views into ``data``, no copy)."""
    view = memoryview(data)
    if view.nbytes < 4:
        raise ValueError(f"payload of {view.nbytes} bytes is shorter than its frame count")
    (n,) = _COUNT.unpack_from(view, 0)
    start = 4 + 8 * n
    if n == 0 or start > view.nbytes:
        raise ValueError(f"payload of {view.nbytes} bytes cannot hold {n} frame length(s)")
    lengths = struct.unpack_from(f"<{n}Q", view, 4)
    if start + sum(lengths) != view.nbytes:
        raise ValueError(f"frame lengths sum to {sum(lengths)} bytes, payload holds "
                         f"{view.nbytes - start}")
    frames = []
    for length in lengths:
        frames.append(view[start:start + length])
        start += length
    return frames


def versions() -> dict[str, str]:
    """Versions of what wrote a file, stored with it."""
    import mcap
    import msgspec
    import zmq

    from rig import __version__

    return {"rig": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "msgspec": msgspec.__version__, "pyzmq": zmq.__version__,
            "mcap": getattr(mcap, "__version__", "?"), "host": platform.node()}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_array(data: bytes, name: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise RecordingError(f"attachment {name}: not a plain .npy array ({exc})") from None


class RecordingWriter:
    """Writes a Rig recording; never overwrites an existing file.

    Parameters
    ----------
    path : the ``.mcap`` file to create (must not exist).
    chunk_kib : chunk size; a chunk also ends at every ``flush()``.
    compression : ``"none"`` (default, cheapest for the CPU) or ``"zstd"``.
    """

    def __init__(self, path: str | Path, chunk_kib: int = 1024, compression: str = "none"):
        from mcap.writer import CompressionType, Writer

        if compression not in ("none", "zstd", "lz4"):
            raise RecordingError(f"compression {compression!r}: use 'none', 'zstd' or 'lz4'")
        self.path = Path(path)
        try:
            # "xb": a recording on disk is never overwritten, even by a restarted recorder.
            self._file: IO[bytes] = open(self.path, "xb")
        except FileExistsError:
            raise RecordingError(f"{self.path}: exists; a recording is never overwritten, "
                                 "choose another name") from None
        self._writer = Writer(self._file, chunk_size=chunk_kib * 1024,
                              compression=CompressionType[compression.upper()])
        self._writer.start(profile=PROFILE, library=f"rig {versions()['rig']}")
        self._channels: dict[str, int] = {}
        self.messages = 0
        self.bytes = 0
        self.add_metadata("rig", {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                  "created_ns": str(time.time_ns()), **versions()})
        self.flush()

    def add(self, topic: str, frames, log_time: int, publish_time: int, seq: int = 0) -> None:
        """Add one bus message: ``frames`` are its wire frames after the topic."""
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._writer.register_channel(topic, MESSAGE_ENCODING, 0)
            self._channels[topic] = channel
        data = pack_frames(frames)
        self._writer.add_message(channel, int(log_time), data, int(publish_time),
                                 int(seq) & 0xFFFFFFFF)
        self.messages += 1
        self.bytes += len(data)

    def add_metadata(self, name: str, data: dict) -> None:
        self._writer.add_metadata(name, {str(k): str(v) for k, v in data.items()})

    def add_json(self, name: str, value) -> None:
        """Metadata record ``name`` holding one JSON document under key ``json``."""
        self.add_metadata(name, {"json": json.dumps(value, default=str)})

    def add_array(self, name: str, array: np.ndarray) -> None:
        """Attach an array as ``NAME.npy`` (ground truth, positions)."""
        now = time.time_ns()
        self._writer.add_attachment(now, now, f"{name}.npy", "application/x-npy",
                                    npy_bytes(array))

    def flush(self) -> None:
        """End the chunk in progress and hand everything to the OS (survives SIGKILL)."""
        self._writer.flush()

    def close(self) -> None:
        """Write the summary and close; the file is then complete and indexed."""
        if self._file.closed:
            return
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


@dataclass
class Entry:
    """One recorded bus message."""

    topic: str
    frames: list  # memoryviews: header, then array buffers
    log_time: int
    publish_time: int


@dataclass
class RecordingReader:
    """Streams a recording, complete or cut short by a crash.

    Iterate ``entries()`` once; afterwards ``metadata``, ``attachments``, ``complete`` and
    ``problem`` describe the whole file. A file that ends early (no footer) is read up to
    its last whole record and ``problem`` says where it stopped; a file whose bytes are
    wrong (not MCAP, a newer format, a corrupt record) raises ``RecordingError``.
    """

    path: Path
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    attachments: dict[str, bytes] = field(default_factory=dict)
    complete: bool = False
    problem: str = ""
    messages: int = 0
    stopped_at: int = 0

    def entries(self, topics=None) -> Iterator[Entry]:
        from mcap.exceptions import EndOfFile, InvalidMagic, McapError, RecordLengthLimitExceeded
        from mcap.records import Attachment, Channel, Footer, Message, Metadata
        from mcap.stream_reader import StreamReader

        path = self.path
        try:
            size = path.stat().st_size
            stream = open(path, "rb")
        except OSError as exc:
            raise RecordingError(f"{path}: cannot open ({exc.strerror})") from None
        if size < 8:
            stream.close()
            raise RecordingError(f"{path}: not an MCAP recording: empty or cut before its "
                                 f"magic bytes ({size} bytes)")
        channels: dict[int, str] = {}
        with stream:
            reader = StreamReader(stream, validate_crcs=True, record_size_limit=max(size, 64))
            records = reader.records
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except InvalidMagic:
                    if stream.tell() <= 8:
                        raise RecordingError(f"{path}: not an MCAP recording (bad magic "
                                             "bytes at the start)") from None
                    # The footer's closing magic is wrong: the data before it is whole.
                    self.problem = f"bad closing magic at byte {stream.tell()}"
                    break
                except (EndOfFile, RecordLengthLimitExceeded):
                    # (The length limit is the file size: a record longer runs past its end.)
                    if stream.tell() <= 8 and not self.metadata:
                        raise RecordingError(f"{path}: empty or cut before its first "
                                             f"record ({size} bytes)") from None
                    self.stopped_at = stream.tell()
                    self.problem = (f"no footer: the file ends in the middle of a record "
                                    f"(the recorder was killed or the disk filled); read "
                                    f"{self.messages} message(s) up to byte {self.stopped_at} "
                                    f"of {size}")
                    break
                except (McapError, ValueError, OSError, MemoryError, struct.error) as exc:
                    # A CRC mismatch or an impossible record: the bytes are damaged.
                    raise RecordingError(f"{path}: corrupt record near byte {stream.tell()} "
                                         f"({type(exc).__name__}: {exc}); the "
                                         f"{self.messages} message(s) before it can be read "
                                         "with `rig inspect`") from None
                if isinstance(record, Metadata):
                    self.metadata[record.name] = dict(record.metadata)
                    if record.name == "rig":
                        self._check_version(record.metadata)
                elif isinstance(record, Channel):
                    if record.message_encoding != MESSAGE_ENCODING:
                        raise RecordingError(
                            f"{path}: channel {record.topic!r} is encoded as "
                            f"{record.message_encoding!r}, not {MESSAGE_ENCODING!r}: "
                            "not a Rig recording")
                    channels[record.id] = record.topic
                elif isinstance(record, Message):
                    if "rig" not in self.metadata:
                        raise RecordingError(f"{path}: messages before the 'rig' metadata "
                                             "record: not a Rig recording")
                    topic = channels.get(record.channel_id)
                    if topic is None:
                        raise RecordingError(f"{path}: message on unknown channel "
                                             f"{record.channel_id} (corrupt file)")
                    self.messages += 1
                    if topics is not None and topic not in topics:
                        continue
                    try:
                        frames = unpack_frames(record.data)
                    except ValueError as exc:
                        raise RecordingError(f"{path}: message {self.messages} on {topic!r} "
                                             f"is corrupt ({exc})") from None
                    yield Entry(topic, frames, record.log_time, record.publish_time)
                elif isinstance(record, Attachment):
                    self.attachments[record.name] = record.data
                elif isinstance(record, Footer):
                    self.complete = True
        if not self.metadata and not self.complete and not self.problem:
            raise RecordingError(f"{path}: holds no records")

    def _check_version(self, meta: dict) -> None:
        if meta.get("format") != FORMAT:
            raise RecordingError(f"{self.path}: format {meta.get('format')!r}, "
                                 f"expected {FORMAT!r}: not a Rig recording")
        try:
            version = int(meta.get("format_version", "?"))
        except ValueError:
            raise RecordingError(f"{self.path}: unreadable format_version "
                                 f"{meta.get('format_version')!r}") from None
        if version > FORMAT_VERSION:
            raise RecordingError(f"{self.path}: recording format version {version} is newer "
                                 f"than this Rig reads ({FORMAT_VERSION}); upgrade Rig "
                                 f"(written by rig {meta.get('rig', '?')})")

    def json(self, name: str, default=None):
        record = self.metadata.get(name)
        return json.loads(record["json"]) if record and "json" in record else default
