"""Follow TIFF files while the acquisition software writes them, frame by frame.

ScanImage and Micro-Manager append one page (IFD + pixels) per frame and move on to the
next file of a numbered series when one is full. tifffile re-parses every IFD on open and
has no follow mode (tifffile#276), so this reader keeps its own position: the offset of the
last IFD it read. On each poll it reads that IFD's next-IFD pointer; once it is set and the
new page's pixels are all on disk, the page is returned. Only uncompressed pages can be
streamed (what acquisition software writes); classic TIFF and BigTIFF, either byte order.

ScanImage metadata is read when present (``tifffile.read_scanimage_metadata``: the
frame-invariant ``SI.*`` block, channels saved, volume rate) and each page's description
(``frameNumbers``, ``frameTimestamps_sec``, ``epoch``) gives the frame's acquisition time.
Headers are sometimes wrong: settings given by the caller override them.
"""
from __future__ import annotations

import glob
import logging
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rig.readers import Frame, FrameSizeError, FramesStopped, ReaderCancelled, ReaderError

log = logging.getLogger(__name__)

_TYPES = {1: "B", 2: "s", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 11: "f", 12: "d",
          16: "Q", 17: "q", 18: "Q"}
_SAMPLE = {1: "u", 2: "i", 3: "f"}


@dataclass
class Page:
    """One TIFF page of pixels as read, before it becomes a ``Frame``."""

    image: np.ndarray  # (H, W)
    index: int  # page number over the whole series
    file: Path
    description: str = ""


class _TiffFile:
    """One growing TIFF: header, then IFDs walked from the last one read."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = open(path, "rb")
        head = self.fh.read(16)
        if len(head) < 8:
            raise BlockingIOError  # still being created
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None:
            raise ReaderError(f"{path}: not a TIFF file (starts with {head[:4]!r})")
        version = struct.unpack(order + "H", head[2:4])[0]
        self.o = order
        if version == 42:
            self.big = False
        elif version == 43:
            if len(head) < 16:
                raise BlockingIOError
            self.big = True
        else:
            raise ReaderError(f"{path}: TIFF version {version}, expected 42 or 43 (BigTIFF)")
        self.next_ptr_at: int | None = None  # where the next-IFD pointer of the last IFD is

    def close(self) -> None:
        self.fh.close()

    def _read(self, offset: int, n: int) -> bytes:
        self.fh.seek(offset)
        data = self.fh.read(n)
        if len(data) < n:
            raise BlockingIOError
        return data

    def next_page_offset(self) -> int:
        """Offset of the next IFD to read, or 0 if none yet."""
        fmt = self.o + ("Q" if self.big else "I")
        # Before the first page: the header's pointer, which a writer may patch in late.
        at = self.next_ptr_at if self.next_ptr_at is not None else (8 if self.big else 4)
        return struct.unpack(fmt, self._read(at, struct.calcsize(fmt)))[0]

    def read_page(self, offset: int) -> tuple[np.ndarray, str]:
        """Pixels and description of the IFD at ``offset``; BlockingIOError if incomplete."""
        o, big = self.o, self.big
        count_fmt, entry_size = (o + "Q", 20) if big else (o + "H", 12)
        n = struct.unpack(count_fmt, self._read(offset, struct.calcsize(count_fmt)))[0]
        table_at = offset + struct.calcsize(count_fmt)
        raw = self._read(table_at, n * entry_size + (8 if big else 4))  # + next pointer
        tags = {}
        for i in range(n):
            entry = raw[i * entry_size:(i + 1) * entry_size]
            if big:
                code, typ, count = struct.unpack(o + "HHQ", entry[:12])
                inline = entry[12:20]
            else:
                code, typ, count = struct.unpack(o + "HHI", entry[:8])
                inline = entry[8:12]
            if code not in (256, 257, 258, 259, 270, 273, 277, 279, 284, 339):
                continue
            char = _TYPES.get(typ)
            if char is None:
                continue
            size = struct.calcsize(char) * count
            data = inline[:size] if size <= len(inline) else self._read(
                struct.unpack(o + ("Q" if big else "I"), inline[:8 if big else 4])[0], size)
            tags[code] = data[:count].decode(errors="replace").rstrip("\0") if char == "s" \
                else struct.unpack(f"{o}{count}{char}", data)
        image = self._pixels(tags, offset)
        self.next_ptr_at = table_at + n * entry_size
        return image, tags.get(270, "")

    def _pixels(self, tags: dict, offset: int) -> np.ndarray:
        where = f"{self.path} (IFD at byte {offset})"
        if tags.get(259, (1,))[0] != 1:
            raise ReaderError(f"{where}: compressed page (Compression = {tags[259][0]}); "
                              "set the acquisition software to write uncompressed TIFF")
        if tags.get(277, (1,))[0] != 1:
            raise ReaderError(f"{where}: {tags[277][0]} samples per pixel; write one channel "
                              "per page (ScanImage and Micro-Manager do)")
        try:
            width, height = tags[256][0], tags[257][0]
            offsets, counts = tags[273], tags[279]
        except KeyError as exc:
            raise ReaderError(f"{where}: missing TIFF tag {exc.args[0]}") from None
        bits = tags.get(258, (16,))[0]
        kind = _SAMPLE.get(tags.get(339, (1,))[0], "u")
        dtype = np.dtype(f"{self.o}{kind}{bits // 8}")
        need = width * height * dtype.itemsize
        if sum(counts) < need:
            raise ReaderError(f"{where}: strips hold {sum(counts)} bytes, a {height} x {width} "
                              f"{dtype.name} image needs {need}")
        data = b"".join(self._read(a, c) for a, c in zip(offsets, counts))
        return np.frombuffer(data[:need], dtype=dtype).reshape(height, width).astype(
            dtype.newbyteorder("="), copy=False)


def parse_description(text: str) -> dict:
    """ScanImage-style ``key = value`` lines of a page description -> dict (numbers parsed)."""
    meta = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        try:
            meta[key.strip()] = float(value) if re.fullmatch(r"[-+0-9.eE]+", value) else value
        except ValueError:
            meta[key.strip()] = value
    return meta


def epoch_ns(meta: dict) -> int | None:
    """The acquisition start ``epoch = [Y M D h m s.s]`` of a ScanImage page, in ns."""
    text = meta.get("epoch")
    if not isinstance(text, str):
        return None
    parts = [float(p) for p in re.findall(r"[-+0-9.]+", text)]
    if len(parts) != 6:
        return None
    import calendar

    y, mo, d, h, mi, s = parts
    seconds = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), 0)) + s
    return int(seconds * 1e9)


class TiffFollower:
    """Frames of one channel and plane from a TIFF file or a growing series of them.

    Parameters
    ----------
    path : a file, a folder (all ``*.tif``/``*.tiff`` in it, in name order) or a glob.
    shape : expected (H, W); a page of another size is an error naming the file.
    timeout_s : ``next_frame`` raises ``FramesStopped`` after this long without a frame.
    channels, planes : pages are interleaved channel fastest, then plane; 0 = from the
        ScanImage header if present, else 1.
    channel, plane : which to return.
    poll_s : how often to look for new bytes while waiting (files have no wake-up event).
    """

    def __init__(self, path: str | Path, shape: tuple[int, int] | None = None,
                 timeout_s: float = 5.0, channels: int = 0, planes: int = 0, channel: int = 0,
                 plane: int = 0, poll_s: float = 0.002):
        self.pattern = str(Path(path).expanduser())
        self.shape = tuple(shape) if shape else None
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._channels, self._planes = channels, planes
        self.channel, self.plane = channel, plane
        self.file: _TiffFile | None = None
        self.done_files: set[str] = set()
        self.page_index = 0  # over the whole series
        self.frames = 0  # frames returned
        self._cancelled = False
        self.scanimage: dict = {}  # the frame-invariant SI.* block of a ScanImage file
        self.scanimage_rois: dict = {}  # its ROI group JSON

    # -- files ----------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        p = Path(self.pattern)
        if p.is_dir():
            names = [str(f) for f in sorted(p.iterdir()) if f.suffix.lower() in (".tif", ".tiff")]
        elif any(ch in self.pattern for ch in "*?["):
            names = sorted(glob.glob(self.pattern))
        else:
            names = [self.pattern] if p.exists() else []
        return [n for n in names if n not in self.done_files]

    def _open_next(self) -> bool:
        for name in self._candidates():
            try:
                self.file = _TiffFile(Path(name))
            except BlockingIOError:
                return False  # being created: try again on the next poll
            self._read_scanimage()
            log.info("following %s", name)
            return True
        return False

    def _read_scanimage(self) -> None:
        import tifffile

        try:
            self.file.fh.seek(0)
            meta = tifffile.read_scanimage_metadata(self.file.fh)
        except (ValueError, KeyError, IndexError, OSError, struct.error):
            return  # not a ScanImage file (or a header tifffile cannot parse): no metadata
        frame_data, rois = meta[0], meta[1]
        self.scanimage = frame_data if isinstance(frame_data, dict) else {}
        self.scanimage_rois = rois if isinstance(rois, dict) else {}

    @property
    def channels(self) -> int:
        if self._channels:
            return self._channels
        saved = self.scanimage.get("SI.hChannels.channelSave")
        return len(saved) if isinstance(saved, (list, tuple)) else 1

    @property
    def planes(self) -> int:
        if self._planes:
            return self._planes
        n = self.scanimage.get("SI.hStackManager.actualNumSlices") or \
            self.scanimage.get("SI.hStackManager.numSlices")
        return int(n) if isinstance(n, (int, float)) and n >= 1 else 1

    @property
    def rate_hz(self) -> float | None:
        """Volume rate from the ScanImage header, if any."""
        for key in ("SI.hRoiManager.scanVolumeRate", "SI.hRoiManager.scanFrameRate"):
            if isinstance(self.scanimage.get(key), (int, float)):
                return float(self.scanimage[key])
        return None

    # -- frames ---------------------------------------------------------------------------
    def _poll_page(self) -> Page | None:
        """The next page if one is complete on disk, else None (never blocks)."""
        if self.file is None and not self._open_next():
            return None
        f = self.file
        try:
            offset = f.next_page_offset()
            if offset == 0:
                # This file has ended if a newer one has appeared: move on to it.
                if any(n != str(f.path) for n in self._candidates()):
                    self.done_files.add(str(f.path))
                    f.close()
                    self.file = None
                    return self._poll_page()
                return None
            image, description = f.read_page(offset)
        except BlockingIOError:
            return None  # the writer has not finished this page yet
        page = Page(image, self.page_index, f.path, description)
        self.page_index += 1
        return page

    def _wanted(self, index: int) -> bool:
        c, p = self.channels, self.planes
        return index % c == self.channel and (index // c) % p == self.plane

    def next_frame(self, timeout_s: float | None = None) -> Frame:
        """The next frame of the chosen channel and plane; waits up to ``timeout_s``.

        ``index`` counts frames of that channel and plane from the series' start;
        ``t_acq_ns`` is the ScanImage frame time (0 without one); ``meta`` holds the page's
        description fields and its ``file``."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            page = self._poll_page()
            if page is not None:
                if not self._wanted(page.index):
                    continue
                if self.shape is not None and page.image.shape != self.shape:
                    raise FrameSizeError(
                        f"{page.file} page {page.index}: {page.image.shape[0]} x "
                        f"{page.image.shape[1]} pixels, expected {self.shape[0]} x "
                        f"{self.shape[1]}: check the acquisition settings or the ROI file")
                meta = parse_description(page.description) if page.description else {}
                self.frames += 1
                return Frame(page.image, page.index // (self.channels * self.planes),
                             frame_time_ns(meta) or 0, {**meta, "file": str(page.file)})
            if self._cancelled:
                raise ReaderCancelled(f"{self.pattern}: reading cancelled")
            if time.monotonic() >= deadline:
                where = self.file.path if self.file else self.pattern
                raise FramesStopped(
                    f"{where}: no new frame for {timeout_s:.1f} s after {self.frames} frame(s)"
                    f"{'' if self.frames else ' (no TIFF file found yet)' if not self.file else ''}"
                    ": has acquisition stopped, or is it writing elsewhere?")
            time.sleep(self.poll_s)  # a file has no wake-up event: look again shortly

    def cancel(self) -> None:
        """Make a waiting ``next_frame`` (in another thread) raise ReaderCancelled soon."""
        self._cancelled = True

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def stats(self) -> dict:
        return {"pages": self.page_index}

    def __iter__(self):
        return self

    def __next__(self) -> Frame:
        return self.next_frame()


def frame_time_ns(meta: dict) -> int | None:
    """Acquisition time of a ScanImage page (epoch + frameTimestamps_sec), if it says."""
    start = epoch_ns(meta)
    t = meta.get("frameTimestamps_sec")
    if start is None or not isinstance(t, float):
        return None
    return start + int(t * 1e9)

