"""Messages on the bus: one function turns a message into frames, one turns frames back.

Wire form (multipart)::

    [topic (utf-8), header (msgpack), array buffer 0, array buffer 1, ...]

The header is a typed ``msgspec`` struct: schema version, source node, sequence number,
imaging frame index, acquisition and send times (ns), the dtype/shape of each array and a
small ``meta`` map of plain values. Arrays travel as raw buffers (zero-copy above pyzmq's
copy threshold). Nothing is pickled: a peer that can send must not be able to run code.
``decode`` validates everything and raises ``MessageError`` naming the field, and nothing
else, whatever the bytes: every size is computed with Python integers and every integer
field is bounded to int64, so no header can overflow a product or a clock.

The ``meta`` of the messages the runtime itself acts on (control verbs, heartbeats) and
the control channel's requests are typed structs here too; ``parse_meta`` validates one.
"""
from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from rig.telemetry import N_BINS

SCHEMA_VERSION = 1

# Topic names the runtime and the packages share.
CONTROL = "control"  # signed control verbs from a supervisor to its nodes
HEARTBEAT = "heartbeat"  # each node's status, counters and latency histograms
LOG = "log"
TRACES = "traces"
FRAME = "frame"
BEHAVIOUR = "behaviour"
TAIL = "tail"
DECODED = "decoded"
STIM_PLAN = "stim.plan"
STIM_FIRED = "stim.fired"
ANATOMY = "anatomy"
STIMULUS = "stimulus"
POSTERIOR = "posterior"
HELLO = "_hello"  # prefix of the connection probes (rig.bus.wait_connected)
SIM_TRUTH = "sim.truth"  # the simulator's ground truth (connectivity, responders)
SIM_STIMULATED = "sim.stimulated"  # the simulator: the targets it stimulated, who responded
SIM_TAIL = "sim.tail"  # the simulator's tail angles for the simulated camera
CAMERA_FRAME = "camera.frame"  # the camera node's decimated raw images, for the GUI
CAMERA_STATS = "camera.stats"  # the camera node's tracking statistics
SALIENCE = "salience"  # per-neuron decoder attribution; the GUI files and shows it
TRUTH = "truth"  # the ground truth in recordings made before the simulator sent SIM_TRUTH

# Every integer on the wire fits an int64 (msgpack carries up to 2**64 - 1; numpy, time
# arithmetic and our own re-encoding do not).
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
NonNeg = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Name = Annotated[str, msgspec.Meta(max_length=200)]

# Only plain numeric dtypes cross the wire; "O" (objects) would need pickle.
ALLOWED_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64", "complex64"]
)

# Arrays that a known topic must carry: name -> (dtype, ndim). Other topics are free-form.
TOPIC_SCHEMAS: dict[str, dict[str, tuple[str, int]]] = {
    TRACES: {"dff": ("float32", 1)},
    FRAME: {"image": ("uint16", 2)},
    BEHAVIOUR: {"angles": ("float32", 1)},
    TAIL: {"angles": ("float32", 1)},
    DECODED: {"pred": ("float32", 1)},
    STIM_PLAN: {"targets": ("int32", 1), "power_mw": ("float32", 1)},
    STIM_FIRED: {"targets": ("int32", 1)},
}


class MessageError(ValueError):
    """A message that cannot be decoded; the receiving node counts it and drops it."""


class ArraySpec(msgspec.Struct, array_like=True, frozen=True):
    name: Name
    dtype: str
    shape: tuple[NonNeg, ...]


class Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int  # schema version
    source: Name  # publishing node
    seq: NonNeg  # per (source, topic) sequence number; gaps are drops
    frame: Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]  # imaging frame, -1 if none
    t_acq_ns: NonNeg  # acquisition time of that frame (time.time_ns clock), 0 if none
    t_send_ns: NonNeg  # when it was put on the wire
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
    """Rebuild a message from received frames (bytes or ``zmq.Frame``), validating all of it.

    Raises ``MessageError`` (and nothing else) for anything that is not a valid message.
    """
    try:
        return _decode(frames)
    except MessageError:
        raise
    except Exception as exc:  # the network's bytes must never raise anything else
        raise MessageError(f"undecodable message ({type(exc).__name__}: {exc})") from None


def _decode(frames: list) -> Message:
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
    if len(spec.shape) > 32:  # numpy's limit
        raise MessageError(f"{topic}.{spec.name}: {len(spec.shape)} dimensions, at most 32")
    dtype = np.dtype(spec.dtype)
    expected = math.prod(spec.shape) * dtype.itemsize  # Python ints: no wrap-around
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


# -- what the runtime acts on: control verbs, control requests, heartbeats ------------------
class Verb(str, enum.Enum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    SHUTDOWN = "shutdown"
    STATUS = "status"
    ARM = "arm"
    DISARM = "disarm"
    RECORD = "record"  # args: RecordArgs
    SET = "set"  # args: SetArgs; handled by the target node's on_control
    PING = "ping"  # the supervisor is alive (nodes' dead-man clock); never from a user


# A SET value: a number, a word or a short list of numbers (e.g. the tail's two clicks).
Scalar = bool | Int64 | float | Name
SetValue = Scalar | Annotated[list[Int64 | float], msgspec.Meta(max_length=64)]


class SetArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    value: SetValue
    node: Name = ""  # the dashboard also names the target node here


class RecordArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    on: bool = True


class NoArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


VERB_ARGS: dict[Verb, type] = {Verb.SET: SetArgs, Verb.RECORD: RecordArgs}


def verb_args(verb: Verb, args: Any) -> dict:
    """``args`` checked against the verb's struct, as a plain dict; ``ValueError`` names
    what is wrong."""
    try:
        return msgspec.to_builtins(msgspec.convert(args or {}, VERB_ARGS.get(verb, NoArgs)))
    except msgspec.ValidationError as exc:
        raise ValueError(f"{verb.value} args: {exc}") from None


class ControlMeta(msgspec.Struct, frozen=True):
    """The ``meta`` of a ``control`` message on the bus, signed by the run's key."""

    sender: Name  # the supervisor's machine
    verb: Verb
    target: Name  # a node name or "*"
    args: dict[str, Any]
    t_ns: NonNeg  # strictly increasing per sender: older or equal is a replay
    mac: Name
    run: Name = ""  # the run this command belongs to: nodes of another run refuse it


class ControlRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A request on the supervisor's control channel (JSON), signed with the run's secret
    (``rig.node.sign_control``) by ``rig.supervisor.send_control``."""

    verb: Verb
    target: Name = "*"
    args: dict[str, Any] = {}
    sender: Name = ""
    t_ns: NonNeg = 0
    mac: Name = ""


class HistogramWire(msgspec.Struct, frozen=True):
    """A latency histogram's sparse wire form (``rig.telemetry.LatencyHistogram.to_wire``)."""

    c: dict[str, NonNeg] = {}
    max: NonNeg = 0

    def __post_init__(self):
        for key in self.c:
            if not (key.isdigit() and int(key) < N_BINS):
                raise ValueError(f"histogram bin {key!r} is not one of 0..{N_BINS - 1}")


class HeartbeatMeta(msgspec.Struct, frozen=True):
    """The ``meta`` of a node's ``heartbeat``."""

    status: Literal["ready", "idle", "running", "exited"]
    running: bool
    armed: bool
    msgs_in: NonNeg = 0
    malformed: NonNeg = 0
    drops: dict[Name, NonNeg] = {}
    counters: dict[Name, Int64 | float] = {}
    last_error: str = ""
    handler: HistogramWire = HistogramWire()
    latency: dict[Name, dict[Name, HistogramWire]] = {}
    stats: dict[Any, Any] = {}  # the node's own live figures: any keys, but a map
    summary: dict[Any, Any] = {}  # its closing figures (status "exited")
    run: Name = ""
    mac: Name = ""  # rig.node.sign_meta with the run's key


def parse_meta(meta: dict, struct: type):
    """``meta`` as ``struct``, or ``MessageError`` naming the field."""
    try:
        return msgspec.convert(meta, struct)
    except msgspec.ValidationError as exc:
        raise MessageError(f"{struct.__name__}: {exc}") from None
