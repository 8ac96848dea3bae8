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
the reader here. Every chunk and attachment carries a CRC, and the data section and the
summary each a checksum of their own, so any damaged byte is found: the reader walks the
file record by record (a record's length is checked against the file size first, so a
corrupt length cannot ask for gigabytes: mcap#1220), skips a damaged record, reports it,
and goes on at the next whole chunk.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import mmap
import os
import platform
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np
from mcap.exceptions import McapError

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
        # Data-section checksum too: then any damaged byte is found, not only in chunks.
        self._writer = Writer(self._file, chunk_size=chunk_kib * 1024,
                              compression=CompressionType[compression.upper()],
                              enable_data_crcs=True)
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


_MAGIC = b"\x89MCAP0\r\n"
_RECORD = struct.Struct("<BQ")  # opcode, body length
_FOOTER = struct.Struct("<BQQQI")  # opcode, length, summary start, summary offset start, crc
_CHUNK_HEAD = struct.Struct("<QQQII")  # start, end, uncompressed size, crc, compression length
_DATA_END_SIZE = 13
# Top-level records that may appear in the data section (the MCAP specification).
_OP_HEADER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x01, 0x03, 0x04, 0x05, 0x06
_OP_MESSAGE_INDEX, _OP_ATTACHMENT, _OP_METADATA, _OP_DATA_END = 0x07, 0x09, 0x0C, 0x0F
_DATA_OPCODES = {_OP_HEADER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_MESSAGE_INDEX,
                 _OP_ATTACHMENT, _OP_METADATA, _OP_DATA_END}


@functools.cache
def _damage_errors() -> tuple[type[Exception], ...]:
    """What parsing damaged bytes raises: mcap's and struct's errors, impossible sizes, and
    the decompressors' own (lz4 raises RuntimeError, zstandard ZstdError)."""
    errors = [McapError, ValueError, struct.error, EOFError, IndexError, KeyError,
              OverflowError, MemoryError, RuntimeError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def _attachment_crc_ok(body) -> bool:
    """Whether an Attachment record's body matches the CRC in its last 4 bytes."""
    return zlib.crc32(body[:-4]) == struct.unpack_from("<I", body, len(body) - 4)[0]


@dataclass
class RecordingReader:
    """Streams a recording, complete, cut short by a crash, or damaged.

    Iterate ``entries()`` once; afterwards ``metadata``, ``attachments``, ``complete``,
    ``problem`` and ``corrupt`` describe the whole file. The file is walked record by record:
    a damaged record (checksum or structure wrong) is skipped and listed in ``corrupt``, and
    reading goes on at the next whole chunk; a file that ends early (no footer) is read up to
    its last whole record and ``problem`` says where it stopped. ``complete`` holds only when
    the footer, both checksums (data section, summary) and every record are intact. A file
    that is not MCAP, or a Rig recording of a newer format, raises ``RecordingError``.
    """

    path: Path
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    attachments: dict[str, bytes] = field(default_factory=dict)
    complete: bool = False
    problem: str = ""
    corrupt: list[str] = field(default_factory=list)  # "bytes A-B: what was wrong", in order
    messages: int = 0
    stopped_at: int = 0

    def entries(self, topics=None) -> Iterator[Entry]:
        path = self.path
        try:
            size = path.stat().st_size
            stream = open(path, "rb")
        except OSError as exc:
            raise RecordingError(f"{path}: cannot open ({exc.strerror})") from None
        with stream:
            if size < len(_MAGIC) or stream.read(len(_MAGIC)) != _MAGIC:
                raise RecordingError(f"{path}: not an MCAP recording: empty, cut before its "
                                     f"magic bytes or bad magic bytes at the start ({size} bytes)")
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield from self._walk(data, topics)
        if self.corrupt:
            skipped = "; ".join(self.corrupt[:5]) + (" ..." if len(self.corrupt) > 5 else "")
            what = f"{len(self.corrupt)} damaged region(s) skipped ({skipped})"
            self.problem = f"{self.problem}; {what}" if self.problem else what
        if self.problem:
            self.complete = False
        if not self.metadata and not self.messages and not self.complete:
            raise RecordingError(f"{path}: holds no readable records"
                                 + (f" ({self.problem})" if self.problem else ""))

    def _walk(self, data, topics) -> Iterator[Entry]:
        size = len(data)
        channels: dict[int, str] = {}  # the summary's copy first: a damaged chunk may hold them
        data_end = self._footer(data, channels)  # where DataEnd must be, if the footer is whole
        crc = zlib.crc32(_MAGIC)
        crc_valid = True  # False once a region is skipped: the data checksum cannot match
        at = len(_MAGIC)
        while at < size:
            opcode, length = _RECORD.unpack_from(data, at) if size - at >= 9 else (0, size)
            end = at + 9 + length
            if opcode not in _DATA_OPCODES or end > size:
                resume = self._resync(data, at + 1, data_end)
                if resume is None:
                    self.stopped_at = at
                    if data_end is None and (opcode in _DATA_OPCODES or size - at < 9):
                        self.problem = (f"no footer: the file ends in the middle of a record "
                                        f"at byte {at} of {size} (the recorder was killed or the "
                                        f"disk filled); {self.messages} message(s) read, the last "
                                        f"{size - at} byte(s) lost")
                    else:
                        self.corrupt.append(f"bytes {at}-{size}: unreadable to the end of the "
                                            "file")
                    return
                self.corrupt.append(f"bytes {at}-{resume}: not a whole record")
                at, crc_valid = resume, False
                continue
            if opcode == _OP_DATA_END:
                if length != 4:  # (no checksum covers this record's own length)
                    self.corrupt.append(f"bytes {at}-{at + _DATA_END_SIZE}: DataEnd record "
                                        f"declares {length} bytes, holds 4")
                self._check_data_end(data, at, crc if crc_valid else None, data_end)
                return
            try:
                records = self._parse(opcode, data[at + 9:end])
            except _damage_errors() as exc:
                # Its length may be what is wrong: go on at the next whole chunk, not at `end`
                # (a wrong length would hide the records it spans).
                resume = self._resync(data, at + 1, data_end)
                self.corrupt.append(f"bytes {at}-{resume or size}: {type(exc).__name__}: {exc}")
                if resume is None:
                    self.stopped_at = at
                    return
                at, crc_valid = resume, False
                continue
            if crc_valid:
                crc = zlib.crc32(data[at:end], crc)
            yield from self._apply(records, channels, topics)
            at = end
        self.stopped_at = at
        self.problem = (f"no footer: the file ends after byte {at} (the recorder was killed or "
                        f"the disk filled); {self.messages} message(s) read")

    @staticmethod
    def _parse(opcode: int, body: bytes) -> list:
        """The records of one top-level record; raises if its content does not fill exactly
        the length it declares (or a checksum is wrong)."""
        from mcap.data_stream import ReadDataStream
        from mcap.records import (Attachment, Channel, Chunk, DataEnd, Header, Message,
                                  MessageIndex, Metadata, Schema)
        from mcap.stream_reader import breakup_chunk

        kinds = {_OP_HEADER: Header, _OP_SCHEMA: Schema, _OP_CHANNEL: Channel,
                 _OP_CHUNK: Chunk, _OP_MESSAGE_INDEX: MessageIndex, _OP_ATTACHMENT: Attachment,
                 _OP_METADATA: Metadata, _OP_DATA_END: DataEnd}
        stream = ReadDataStream(io.BytesIO(body))
        if opcode == _OP_MESSAGE:
            return [Message.read(stream, len(body))]
        record = kinds[opcode].read(stream)
        if stream.count != len(body):
            raise ValueError(f"{kinds[opcode].__name__} record declares {len(body)} bytes, "
                             f"holds {stream.count}")
        if opcode == _OP_CHUNK:
            return breakup_chunk(record, validate_crc=True)
        if opcode == _OP_ATTACHMENT and not _attachment_crc_ok(body):
            raise ValueError(f"attachment {record.name!r}: checksum mismatch")
        return [record]

    def _apply(self, records: list, channels: dict, topics) -> Iterator[Entry]:
        from mcap.records import Attachment, Channel, Message, Metadata

        for record in records:
            if isinstance(record, Channel):
                if record.message_encoding != MESSAGE_ENCODING:
                    raise RecordingError(f"{self.path}: channel {record.topic!r} is encoded as "
                                         f"{record.message_encoding!r}, not "
                                         f"{MESSAGE_ENCODING!r}: not a Rig recording")
                channels[record.id] = record.topic
            elif isinstance(record, Message):
                self.messages += 1
                topic = channels.get(record.channel_id)
                if topic is None:
                    self.corrupt.append(f"message {self.messages}: unknown channel "
                                        f"{record.channel_id}")
                    continue
                if topics is not None and topic not in topics:
                    continue
                try:
                    frames = unpack_frames(record.data)
                except ValueError as exc:
                    self.corrupt.append(f"message {self.messages} on {topic!r}: {exc}")
                    continue
                yield Entry(topic, frames, record.log_time, record.publish_time)
            elif isinstance(record, Metadata):
                self.metadata[record.name] = dict(record.metadata)
                if record.name == "rig":
                    self._check_version(record.metadata)
            elif isinstance(record, Attachment):
                self.attachments[record.name] = record.data

    def _footer(self, data, channels: dict) -> int | None:
        """Offset of the DataEnd record the footer points to; None (and ``corrupt`` says why
        when it is damaged rather than missing) when the footer cannot be trusted. With an
        intact summary, its copies of the channel records go into ``channels``."""
        size = len(data)
        at = size - len(_MAGIC) - _FOOTER.size
        if at < len(_MAGIC) + _DATA_END_SIZE or data[size - len(_MAGIC):] != _MAGIC:
            return None  # no footer: cut short (the scan says where)
        opcode, length, summary_start, offset_start, summary_crc = _FOOTER.unpack_from(data, at)
        data_end = (summary_start or at) - _DATA_END_SIZE
        if (opcode != 0x02 or length != 20 or not len(_MAGIC) <= data_end <= at - _DATA_END_SIZE
                or not offset_start <= at):
            self.corrupt.append(f"bytes {at}-{size}: footer damaged")
            return None
        crc = zlib.crc32(data[at:at + _FOOTER.size - 4],
                         zlib.crc32(data[summary_start:at]) if summary_start else 0)
        if summary_crc and crc != summary_crc:
            self.corrupt.append(f"bytes {data_end + _DATA_END_SIZE}-{size}: summary section "
                                "checksum mismatch (its indexes are not used)")
        elif summary_start:
            self._summary_channels(data, summary_start, at, channels)
        return data_end

    def _summary_channels(self, data, at: int, end: int, channels: dict) -> None:
        from mcap.data_stream import ReadDataStream
        from mcap.records import Channel

        while at + 9 <= end:
            opcode, length = _RECORD.unpack_from(data, at)
            if opcode == _OP_CHANNEL and at + 9 + length <= end:
                record = Channel.read(ReadDataStream(io.BytesIO(data[at + 9:at + 9 + length])))
                if record.message_encoding == MESSAGE_ENCODING:
                    channels[record.id] = record.topic
            at += 9 + length

    def _check_data_end(self, data, at: int, crc: int | None, expected: int | None) -> None:
        (stored,) = struct.unpack_from("<I", data, at + 9) if at + 13 <= len(data) else (0,)
        if expected is None:
            if not self.problem:
                self.problem = "no valid footer after the data section"
        elif at != expected:
            self.corrupt.append(f"bytes {at}-{expected}: data section ends where the footer "
                                "does not expect it")
        elif stored and crc is not None and stored != crc and not self.corrupt:
            self.corrupt.append(f"bytes 0-{at}: data section checksum mismatch (a damaged "
                                "byte outside the checked chunks)")
        else:
            self.complete = True
        self.stopped_at = at

    def _resync(self, data, start: int, data_end: int | None) -> int | None:
        """The next offset after ``start`` where a whole, checksummed record begins (a chunk
        or an attachment), or the DataEnd the footer points to; None if there is none."""
        limit = len(data) if data_end is None else data_end
        at = start
        while at < limit:
            candidates = [i for i in (data.find(b"\x06", at, limit), data.find(b"\x09", at, limit))
                          if i >= 0]
            if not candidates:
                break
            at = min(candidates)
            if self._whole_record_at(data, at):
                return at
            at += 1
        return data_end if data_end is not None and data_end >= start else None

    @staticmethod
    def _whole_record_at(data, at: int) -> bool:
        from mcap.data_stream import ReadDataStream
        from mcap.records import Attachment, Chunk
        from mcap.stream_reader import get_chunk_data_stream

        if len(data) - at < 9 + _CHUNK_HEAD.size:
            return False
        opcode, length = _RECORD.unpack_from(data, at)
        if at + 9 + length > len(data):
            return False
        body = data[at + 9:at + 9 + length]
        try:
            if opcode == _OP_CHUNK:
                *_, crc, n = _CHUNK_HEAD.unpack_from(body)
                compression = body[_CHUNK_HEAD.size:_CHUNK_HEAD.size + n]
                if compression not in (b"", b"zstd", b"lz4") or not crc:
                    return False
                get_chunk_data_stream(Chunk.read(ReadDataStream(io.BytesIO(body))), True)
                return True
            Attachment.read(ReadDataStream(io.BytesIO(body)))
            return _attachment_crc_ok(body)
        except _damage_errors():
            return False

    def _check_version(self, meta: dict) -> None:
        if meta.get("format") != FORMAT:
            self.corrupt.append(f"'rig' metadata names format {meta.get('format')!r}, "
                                f"expected {FORMAT!r}")
            return
        try:
            version = int(meta.get("format_version", "?"))
        except ValueError:
            self.corrupt.append(f"unreadable format_version {meta.get('format_version')!r}")
            return
        if version > FORMAT_VERSION:
            raise RecordingError(f"{self.path}: recording format version {version} is newer "
                                 f"than this Rig reads ({FORMAT_VERSION}); upgrade Rig "
                                 f"(written by rig {meta.get('rig', '?')})")

    def json(self, name: str, default=None):
        record = self.metadata.get(name)
        return json.loads(record["json"]) if record and "json" in record else default


def run_files(folder: Path) -> list[Path]:
    """The recordings of a run folder in the order they were written (``session.mcap``,
    then ``session-1.mcap``, ``session-2.mcap`` ... of a restarted recorder)."""
    def order(path: Path):
        match = re.fullmatch(r"(.*)-(\d+)", path.stem)
        return (match.group(1), int(match.group(2))) if match else (path.stem, 0)

    return sorted(Path(folder).glob("*.mcap"), key=order)


class RunReader:
    """The recordings of one run read as one (a restarted recorder writes several files):
    the interface of ``RecordingReader``, its figures over all files."""

    def __init__(self, paths: list[Path]):
        self.readers = [RecordingReader(Path(p)) for p in paths]
        self.path = self.readers[0].path.parent if len(self.readers) > 1 else self.readers[0].path

    def entries(self, topics=None) -> Iterator[Entry]:
        for reader in self.readers:
            yield from reader.entries(topics)

    @property
    def metadata(self) -> dict:  # the last file's record of a name wins (it closed last)
        return {k: v for r in self.readers for k, v in r.metadata.items()}

    @property
    def attachments(self) -> dict:
        return {k: v for r in self.readers for k, v in r.attachments.items()}

    @property
    def problem(self) -> str:
        return "; ".join(f"{r.path.name}: {r.problem}" for r in self.readers if r.problem)

    @property
    def messages(self) -> int:
        return sum(r.messages for r in self.readers)

    json = RecordingReader.json  # over the merged ``metadata``


def open_recording(path: Path) -> RecordingReader | RunReader:
    """A reader of one ``.mcap`` file, or of all the recordings of a run folder in order."""
    path = Path(path)
    return RunReader(run_files(path)) if path.is_dir() else RecordingReader(path)
