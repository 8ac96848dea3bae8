"""Acquisition readers: frames from a real microscope (growing TIFF files, frames pushed
over ZeroMQ, or a lab's own reader) and online ROI trace extraction, joined in the
``Microscope`` node.

A reader is any class with the methods of ``Reader``, built as
``Class(shape=..., timeout_s=..., **reader_settings)`` and named in the config by a
built-in name (``READERS``) or ``"package.module:Class"`` (see ``rig.devices``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# built-in readers, by the name the config's ``reader`` setting uses
READERS = {"tiff": "rig.readers.tiff:TiffFollower", "zmq": "rig.readers.network:NetworkReader"}


class ReaderError(ValueError):
    """Frames or ROIs that cannot be read; the message names the file and the problem."""


class FrameSizeError(ReaderError):
    """Frames of another size than the ROIs or the config expect (a setup mistake)."""


class ReaderCancelled(ReaderError):
    """``cancel()`` was called while a reader waited for a frame (the node is stopping)."""


class FramesStopped(ReaderError, TimeoutError):
    """No new frame within the timeout: acquisition stopped, or the path is wrong."""


@dataclass(frozen=True)
class Frame:
    """One imaging frame as every reader returns it."""

    image: np.ndarray  # (H, W), one channel of one plane
    index: int  # the acquisition's frame number; a gap means frames were lost
    t_acq_ns: int  # acquisition time, ns since the Unix epoch; 0 if the source does not say
    meta: dict = field(default_factory=dict)  # what else the source said about this frame


class Reader:
    """The protocol of a microscope reader (a class need not inherit it, only match it).

    ``next_frame`` is called from the node's reader thread, ``cancel`` from the node's
    main thread while it waits. Errors: ``FramesStopped`` for silence (the node counts a
    stall and waits again), any other ``ReaderError`` for a setup mistake (the node stops
    reading and reports the message).
    """

    rate_hz: float | None = None  # frame rate the source reports (a header); None: unknown

    def next_frame(self, timeout_s: float | None = None) -> Frame | None:
        """The next frame, waiting up to ``timeout_s`` (default: the reader's own); None
        once the acquisition said it has ended."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Make a waiting ``next_frame`` raise ``ReaderCancelled`` soon (any thread)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and sockets."""
        raise NotImplementedError

    def stats(self) -> dict:
        """Counters for the heartbeat (e.g. ``dropped``, ``malformed``); may be empty."""
        raise NotImplementedError
