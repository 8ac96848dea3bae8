"""Acquisition readers: frames from a real microscope (growing TIFF files, frames pushed
over ZeroMQ) and online ROI trace extraction, joined in the ``Microscope`` node."""


class ReaderError(ValueError):
    """Frames or ROIs that cannot be read; the message names the file and the problem."""


class FrameSizeError(ReaderError):
    """Frames of another size than the ROIs or the config expect (a setup mistake)."""


class ReaderCancelled(ReaderError):
    """``cancel()`` was called while a reader waited for a frame (the node is stopping)."""
