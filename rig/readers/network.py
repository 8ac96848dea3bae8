"""Frames pushed over ZeroMQ from an acquisition PC (MATLAB, LabVIEW, Python...).

The rig binds a PULL socket; the acquisition PC connects a PUSH socket and sends one
multipart message per frame (the full wire format, with senders in three languages, is in
``docs/acquisition-wire-format.md``)::

    [b"frame", header (UTF-8 JSON), pixels (raw bytes)]
    header = {"v": 1, "frame": 17, "t_ns": 1764093600123456789,
              "dtype": "uint16", "shape": [512, 512], "order": "C"}

and ``[b"end", b"{}"]`` when the acquisition ends. JSON rather than msgpack because every
acquisition language writes JSON; no pickle, so a sender cannot run code here. A gap in
``frame`` numbers counts as dropped frames.
"""
from __future__ import annotations

import json
import logging
import time
import numpy as np
import zmq

from rig.readers import Frame, FrameSizeError, FramesStopped, ReaderCancelled, ReaderError

log = logging.getLogger(__name__)

WIRE_VERSION = 1
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32")


def parse(parts: list, expected_shape=None) -> Frame | None:
    """One received message -> Frame, or None for ``end``; ReaderError if malformed.

    The header's ``t_ns`` becomes ``t_acq_ns`` (0: the sender does not know) and its
    fields beyond the wire format's own become ``meta``."""
    kind = bytes(parts[0]) if parts else b""
    if kind == b"end":
        return None
    if kind != b"frame" or len(parts) != 3:
        raise ReaderError(f"expected [b'frame', header, pixels] or [b'end', ...], got "
                          f"{len(parts)} part(s) starting {kind[:16]!r}")
    try:
        header = json.loads(bytes(parts[1]))
        version = int(header.get("v", WIRE_VERSION))
        frame = int(header["frame"])
        dtype = str(header["dtype"])
        shape = tuple(int(n) for n in header["shape"])
        order = str(header.get("order", "C")).upper()
        t_ns = int(header.get("t_ns", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ReaderError(f"bad frame header ({type(exc).__name__}: {exc}); it needs frame, "
                          "dtype, shape (see docs/acquisition-wire-format.md)") from None
    if version > WIRE_VERSION:
        raise ReaderError(f"frame header version {version}; this Rig reads {WIRE_VERSION}: "
                          "upgrade Rig")
    if dtype not in DTYPES:
        raise ReaderError(f"frame {frame}: dtype {dtype!r}, expected one of {DTYPES}")
    if len(shape) != 2 or order not in ("C", "F"):
        raise ReaderError(f"frame {frame}: shape {list(shape)} / order {order!r}; send one "
                          "(height, width) plane, order 'C' (row-major) or 'F' (MATLAB)")
    pixels = memoryview(parts[2])
    need = shape[0] * shape[1] * np.dtype(dtype).itemsize
    if pixels.nbytes != need:
        raise ReaderError(f"frame {frame}: {pixels.nbytes} pixel bytes, a {shape[0]} x "
                          f"{shape[1]} {dtype} frame needs {need}")
    if expected_shape is not None and shape != tuple(expected_shape):
        raise FrameSizeError(f"frame {frame}: {shape[0]} x {shape[1]} pixels, expected "
                          f"{expected_shape[0]} x {expected_shape[1]}: check the acquisition "
                          "settings or the ROI file")
    image = np.frombuffer(pixels, dtype=np.dtype(dtype).newbyteorder("<"))
    image = image.reshape(shape, order=order)
    if order == "F" or image.dtype.byteorder == ">":
        image = np.ascontiguousarray(image, dtype=dtype)
    return Frame(image, frame, t_ns, {k: v for k, v in header.items()
                                         if k not in ("v", "frame", "dtype", "shape", "order",
                                                      "t_ns")})


class NetworkReader:
    """Receives frames on a bound PULL socket.

    Parameters
    ----------
    endpoint : where to listen, e.g. ``tcp://0.0.0.0:5560`` (all interfaces) or
        ``tcp://127.0.0.1:0`` (loopback, any port; read ``self.endpoint`` back).
    shape : expected (H, W); a frame of another size raises ReaderError.
    timeout_s : ``next_frame`` raises ``FramesStopped`` after this long without a frame.
    hwm : frames queued before the sender blocks (PUSH blocks, it never drops silently).
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5560", shape=None,
                 timeout_s: float = 5.0, hwm: int = 100, ctx: zmq.Context | None = None):
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.PULL)
        self.sock.linger = 0
        self.sock.rcvhwm = hwm
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise ReaderError(f"cannot listen for frames on {endpoint} ({exc}): is another "
                              "reader running, or is the address not this machine's?") from None
        self.endpoint = self.sock.last_endpoint.decode()
        if "127.0.0.1" not in self.endpoint and "localhost" not in self.endpoint:
            log.warning("listening for frames on %s: any host that can reach it can send "
                        "frames; keep the acquisition link on a private network",
                        self.endpoint)
        self.shape = tuple(shape) if shape else None
        self.timeout_s = timeout_s
        self.rate_hz = None  # the wire format does not say
        self.frames = 0
        self.dropped = 0
        self.malformed = 0
        self.last_error = ""
        self.ended = False
        self._next = None
        self._cancelled = False

    def cancel(self) -> None:
        """Make a waiting ``next_frame`` (in another thread) raise ReaderCancelled soon."""
        self._cancelled = True

    def next_frame(self, timeout_s: float | None = None) -> Frame | None:
        """The next valid frame (None once the sender said ``end``); malformed messages are
        counted, logged and skipped."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            # Wake every 100 ms so that cancel() from another thread is seen.
            if not self.sock.poll(min(left_ms, 100)):
                if self._cancelled:
                    raise ReaderCancelled(f"{self.endpoint}: reading cancelled")
                if left_ms > 100:
                    continue
                raise FramesStopped(f"{self.endpoint}: no frame for {timeout_s:.1f} s after "
                                    f"{self.frames} frame(s): has acquisition stopped, or is "
                                    "the sender connected to another address?")
            parts = self.sock.recv_multipart(copy=False)
            try:
                got = parse([p.buffer for p in parts], self.shape)
            except FrameSizeError:
                raise  # a setup mistake, not one bad message: say so at once
            except ReaderError as exc:
                self.malformed += 1
                self.last_error = str(exc)
                log.warning("dropped a malformed frame from %s: %s", self.endpoint, exc)
                continue
            if got is None:
                self.ended = True
                return None
            if self._next is not None and got.index > self._next:
                self.dropped += got.index - self._next
            self._next = got.index + 1
            self.frames += 1
            return got

    def close(self) -> None:
        self.sock.close(0)

    def stats(self) -> dict:
        return {"dropped": self.dropped, "malformed": self.malformed}


def send_frame(sock: zmq.Socket, image: np.ndarray, frame: int, t_ns: int = 0,
               **meta) -> None:
    """The reference sender (Python side of an acquisition PC): one frame on a PUSH socket."""
    image = np.ascontiguousarray(image)
    header = {"v": WIRE_VERSION, "frame": int(frame), "t_ns": int(t_ns),
              "dtype": image.dtype.name, "shape": list(image.shape), "order": "C", **meta}
    sock.send_multipart([b"frame", json.dumps(header).encode(), image.astype(
        image.dtype.newbyteorder("<"), copy=False)], copy=image.nbytes < 65536)


def send_end(sock: zmq.Socket) -> None:
    sock.send_multipart([b"end", b"{}"])
