"""Messages on the bus: one function turns a message into frames, one turns frames back.

Wire form (multipart)::

    [topic (utf-8), header (msgpack), array buffer 0, array buffer 1, ...]

The header is a typed ``msgspec`` struct: schema version, source node, sequence number,
imaging frame index, acquisition and send times (ns), the dtype/shape of each array and a
small ``meta`` map of plain values. Arrays travel as raw buffers (zero-copy above pyzmq's
copy threshold). Nothing is pickled: a peer that can send must not be able to run code.
``decode`` validates everything and raises ``MessageError`` naming the field.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

SCHEMA_VERSION = 1

# Only plain numeric dtypes cross the wire; "O" (objects) would need pickle.
ALLOWED_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64"]
)

# Arrays that a known topic must carry: name -> (dtype, ndim). Other topics are free-form.
TOPIC_SCHEMAS: dict[str, dict[str, tuple[str, int]]] = {
    "traces": {"dff": ("float32", 1)},
    "frame": {"image": ("uint16", 2)},
    "behaviour": {"angles": ("float32", 1)},
    "tail": {"angles": ("float32", 1)},
    "decoded": {"pred": ("float32", 1)},
    "stim.plan": {"targets": ("int32", 1), "power_mw": ("float32", 1)},
    "stim.fired": {"targets": ("int32", 1)},
}


class MessageError(ValueError):
    """A message that cannot be decoded; the receiving node counts it and drops it."""


class ArraySpec(msgspec.Struct, array_like=True, frozen=True):
    name: str
    dtype: str
    shape: tuple[int, ...]


class Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int  # schema version
    source: str  # publishing node
    seq: int  # per (source, topic) sequence number; gaps are drops
    frame: int  # imaging frame this message derives from, -1 if none
    t_acq_ns: int  # acquisition time of that frame (time.time_ns clock), 0 if none
    t_send_ns: int  # when it was put on the wire
    arrays: tuple[ArraySpec, ...] = ()
    meta: dict[str, Any] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Header)


@dataclass
class Message:
    """A decoded message. Arrays received zero-copy are read-only views: copy before writing."""

    topic: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    frame: int = -1
    t_acq_ns: int = 0
    source: str = ""
    seq: int = 0
    t_send_ns: int = 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def encode(msg: Message, t_send_ns: int | None = None) -> list:
    """Frames for ``socket.send_multipart(frames, copy=False)``.

    Sets ``t_send_ns`` to now (or to the given time, for messages written to a file).
    Array buffers are not copied: do not modify an array until it has been sent.
    """
    specs = []
    buffers = []
    for name, array in msg.arrays.items():
        array = np.asarray(array)
        dtype = array.dtype.name
        if dtype not in ALLOWED_DTYPES:
            raise MessageError(f"{msg.topic}.{name}: dtype {dtype} cannot be sent; "
                               f"use one of {sorted(ALLOWED_DTYPES)}")
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        specs.append(ArraySpec(name, dtype, tuple(int(n) for n in array.shape)))
        # A flat byte view: zero-copy, and its len() is its size in bytes.
        buffers.append(array.reshape(-1).view(np.uint8) if array.size else b"")
    msg.t_send_ns = time.time_ns() if t_send_ns is None else int(t_send_ns)
    header = Header(SCHEMA_VERSION, msg.source, msg.seq, msg.frame, msg.t_acq_ns,
                    msg.t_send_ns, tuple(specs), msg.meta)
    try:
        header_bytes = _encoder.encode(header)
    except TypeError as exc:
        raise MessageError(f"{msg.topic}.meta: {exc}; meta holds only str, numbers, bools, "
                           "lists and dicts (send arrays as arrays)") from None
    return [msg.topic.encode(), header_bytes, *buffers]


def _as_bytes(frame) -> memoryview | bytes:
    return frame.buffer if hasattr(frame, "buffer") else frame


def decode(frames: list) -> Message:
    """Rebuild a message from received frames (bytes or ``zmq.Frame``), validating all of it."""
    if len(frames) < 2:
        raise MessageError(f"truncated message: {len(frames)} frame(s), need topic and header")
    try:
        topic = bytes(_as_bytes(frames[0])).decode()
    except UnicodeDecodeError:
        raise MessageError("topic frame is not utf-8 text") from None
    try:
        header = _decoder.decode(_as_bytes(frames[1]))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # A newer schema may add fields; say so rather than "unknown field".
        version = _peek_version(frames[1])
        if version is not None and version != SCHEMA_VERSION:
            raise MessageError(f"{topic}: schema version {version}, this Rig reads "
                               f"{SCHEMA_VERSION}; upgrade Rig on this machine") from None
        raise MessageError(f"{topic}: bad header ({exc})") from None
    if header.v != SCHEMA_VERSION:
        raise MessageError(f"{topic}: schema version {header.v}, this Rig reads "
                           f"{SCHEMA_VERSION}; upgrade Rig on this machine")
    buffers = frames[2:]
    if len(buffers) != len(header.arrays):
        raise MessageError(f"{topic}: header names {len(header.arrays)} array(s), "
                           f"{len(buffers)} buffer(s) arrived (truncated message?)")
    arrays = {}
    for spec, frame in zip(header.arrays, buffers):
        arrays[spec.name] = _array(topic, spec, _as_bytes(frame))
    _check_schema(topic, arrays)
    return Message(topic, arrays, dict(header.meta), header.frame, header.t_acq_ns,
                   header.source, header.seq, header.t_send_ns)


def _array(topic: str, spec: ArraySpec, buffer) -> np.ndarray:
    if spec.dtype not in ALLOWED_DTYPES:
        raise MessageError(f"{topic}.{spec.name}: unknown dtype {spec.dtype!r}")
    if any(n < 0 for n in spec.shape):
        raise MessageError(f"{topic}.{spec.name}: negative shape {spec.shape}")
    dtype = np.dtype(spec.dtype)
    expected = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
    size = memoryview(buffer).nbytes
    if size != expected:
        raise MessageError(f"{topic}.{spec.name}: buffer holds {size} bytes, "
                           f"shape {spec.shape} of {spec.dtype} needs {expected}")
    array = np.frombuffer(buffer, dtype=dtype).reshape(spec.shape)
    array.flags.writeable = False  # a received buffer is zmq's (pyzmq#1566): copy to write
    return array


def _check_schema(topic: str, arrays: dict[str, np.ndarray]) -> None:
    for name, (dtype, ndim) in TOPIC_SCHEMAS.get(topic, {}).items():
        if name not in arrays:
            raise MessageError(f"{topic}: missing array {name!r}")
        array = arrays[name]
        if array.dtype.name != dtype:
            raise MessageError(f"{topic}.{name}: dtype {array.dtype.name}, expected {dtype}")
        if array.ndim != ndim:
            raise MessageError(f"{topic}.{name}: {array.ndim}-d, expected {ndim}-d")


def _peek_version(frame) -> int | None:
    try:
        raw = msgspec.msgpack.decode(_as_bytes(frame))
    except msgspec.DecodeError:
        return None
    return raw.get("v") if isinstance(raw, dict) else None
