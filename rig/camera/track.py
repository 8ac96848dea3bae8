"""Track a video file offline: ``rig track VIDEO`` (the library side).

The same tracker and bout detector as the live camera node, run over every frame of an HDF5
/ .npy / TIFF stack or an .avi / .mp4 video (OpenCV). Writes, into one folder:

* ``tail.csv``: one row per frame: ``frame``, ``t_s``, ``cum_angle_deg``, ``vigour_deg``,
  ``in_bout`` (0/1), ``lost`` (0/1; its angles are empty), ``length_px`` (visible tail), and
  ``angle_0_deg`` ... ``angle_{S-1}_deg`` (each segment's direction from rest).
* ``bouts.csv``: one row per bout: ``start_frame``, ``end_frame`` (one past the last),
  ``duration_s``, ``max_angle_deg``, ``side``.
* ``contact_sheet.png``: frames spread over the file, rest and bout alike, each with the
  traced tail drawn in (green, red where lost), for checking the trace by eye.

Angles follow the tracker's convention (``rig.camera.tracker``): degrees from the resting
direction given by the two clicked points, image axes, positive clockwise on screen.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rig.camera.bouts import Bout, BoutDetector
from rig.camera.sources import STACK_SUFFIXES, SourceError, StackSource, VideoSource
from rig.camera.tracker import TailTracker

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v")


@dataclass
class Tracked:
    """A tracked file: per frame arrays (T frames, S segments) and the bouts found."""

    fps: float
    angles: np.ndarray  # (T, S) float32 rad; NaN on lost frames
    points: np.ndarray  # (T, S + 1, 2) float32 x, y pixels
    lost: np.ndarray  # (T,) bool
    length: np.ndarray  # (T,) float32 visible tail, pixels
    vigour: np.ndarray  # (T,) float32 rad
    in_bout: np.ndarray  # (T,) bool
    bouts: list[Bout] = field(default_factory=list)
    sheet_frames: list[np.ndarray] = field(default_factory=list)  # images for the sheet
    sheet_index: list[int] = field(default_factory=list)


def open_file(path, fps: float | None = None, dataset: str | None = None):
    """A frame source for a stack or video file, and its frame rate (Hz).

    Raises ``SourceError`` naming the fix: a missing or unreadable file, an unknown suffix,
    a stack without ``fps`` (stacks carry no rate).
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in STACK_SUFFIXES:
        if fps is None:
            raise SourceError(f"{path.name}: a {suffix} stack carries no frame rate; give "
                              "--fps HZ (the camera's rate)")
        source = StackSource(path, dataset=dataset, fps=fps)
        source.open()
        return source, float(fps), source.n_frames
    if suffix in VIDEO_SUFFIXES:
        source = VideoSource(path)
        source.open()
        rate = fps or source.fps
        if not rate:
            source.close()
            raise SourceError(f"{path.name}: the video states no frame rate; give --fps HZ")
        return source, float(rate), source.n_frames
    raise SourceError(f"{path.name}: unknown kind of file; use a stack "
                      f"({', '.join(STACK_SUFFIXES)}) or a video ({', '.join(VIDEO_SUFFIXES)})")


def track_file(path, base, tip, *, fps: float | None = None, n_segments: int = 10,
               polarity: str = "dark", smooth_degree: int = 2, dataset: str | None = None,
               sheet_size: int = 24, progress: bool = True) -> Tracked:
    """Trace every frame of a file and find its bouts.

    Parameters
    ----------
    path : .h5/.hdf5/.npy/.tif/.tiff stack or .avi/.mp4/.mov/.mkv video.
    base, tip : (x, y) pixels of the tail base and the resting tail tip (two clicks).
    fps : camera rate, Hz (required for stacks; a video's own rate otherwise).
    smooth_degree : see ``TailTracker``.
    sheet_size : frames kept for the contact sheet, evenly spread over the file.
    progress : show a tqdm progress bar on stderr.
    """
    from tqdm import tqdm

    source, rate, n_total = open_file(path, fps, dataset)
    try:
        tracker = TailTracker.from_points(base, tip, n_segments, polarity=polarity,
                                          smooth_degree=smooth_degree)
        bouts = BoutDetector(rate)
        # frames for the sheet, spread over the file (the first ones when its length is unknown)
        keep = set(np.linspace(0, n_total - 1, min(sheet_size, n_total)).round().astype(int)
                   .tolist()) if n_total else set(range(sheet_size))
        rows = {k: [] for k in ("angles", "points", "lost", "length", "vigour", "in_bout")}
        sheet, sheet_index = [], []
        bar = tqdm(total=n_total or None, unit="frame", disable=not progress,
                   desc=Path(path).name)
        while (frame := source.read()) is not None:
            r = tracker.track(frame.image)
            bouts.update(r.cum_angle, r.lost)
            for key, value in (("angles", r.angles.copy()), ("points", r.points.copy()),
                               ("lost", r.lost), ("length", r.length),
                               ("vigour", bouts.vigour), ("in_bout", bouts.in_bout)):
                rows[key].append(value)
            if frame.index in keep:
                sheet.append(np.asarray(frame.image).copy())
                sheet_index.append(frame.index)
            bar.update()
        bar.close()
        bouts.finish()
    finally:
        source.close()
    if not rows["lost"]:
        raise SourceError(f"{Path(path).name}: holds no frames")
    return Tracked(rate, np.array(rows["angles"], np.float32),
                   np.array(rows["points"], np.float32), np.array(rows["lost"], bool),
                   np.array(rows["length"], np.float32), np.array(rows["vigour"], np.float32),
                   np.array(rows["in_bout"], bool), list(bouts.bouts), sheet, sheet_index)


def write_outputs(tracked: Tracked, out_dir) -> dict[str, Path]:
    """Write ``tail.csv``, ``bouts.csv`` and ``contact_sheet.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = tracked
    n_seg = t.angles.shape[1]
    deg = np.degrees(t.angles)
    header = ["frame", "t_s", "cum_angle_deg", "vigour_deg", "in_bout", "lost", "length_px",
              *[f"angle_{i}_deg" for i in range(n_seg)]]
    lines = [",".join(header)]
    for i in range(len(t.lost)):
        cells = [str(i), f"{i / t.fps:.6f}", _num(deg[i, -1]), _num(math.degrees(t.vigour[i])),
                 str(int(t.in_bout[i])), str(int(t.lost[i])), _num(t.length[i], 2),
                 *[_num(a) for a in deg[i]]]
        lines.append(",".join(cells))
    paths = {"tail": out / "tail.csv", "bouts": out / "bouts.csv",
             "sheet": out / "contact_sheet.png"}
    paths["tail"].write_text("\n".join(lines) + "\n")
    bout_lines = ["start_frame,end_frame,duration_s,max_angle_deg,side"]
    bout_lines += [f"{b.start},{b.end},{b.duration_s:.6f},{math.degrees(b.max_angle):.3f},"
                   f"{b.side}" for b in t.bouts]
    paths["bouts"].write_text("\n".join(bout_lines) + "\n")
    write_png(paths["sheet"], contact_sheet(t.sheet_frames, [t.points[i] for i in t.sheet_index],
                                            [bool(t.lost[i]) for i in t.sheet_index],
                                            t.sheet_index))
    return paths


def _num(value: float, digits: int = 3) -> str:
    """A CSV cell: empty for NaN (a lost frame), else fixed-point."""
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


# -- the contact sheet: numpy only (no imaging library needed) -------------------------------
_DIGITS = ["111101101101111", "010110010010111", "111001111100111", "111001111001111",
           "101101111001001", "111100111001111", "111100111101111", "111001001001001",
           "111101111101111", "111101111001111"]  # 3 x 5 pixel glyphs, rows top to bottom


def contact_sheet(images, points, lost, index, columns: int = 6, scale: int = 0) -> np.ndarray:
    """(H', W', 3) uint8 RGB grid of grey ``images`` with each frame's traced ``points``
    (S + 1, 2) drawn in green (red when ``lost``) and its frame number in the corner.

    ``scale`` enlarges each tile by an integer factor (0: so that a tile is >= 200 px wide).
    """
    if not images:
        return np.zeros((1, 1, 3), np.uint8)
    h, w = images[0].shape[:2]
    k = scale or max(1, math.ceil(200 / w))
    rows = math.ceil(len(images) / columns)
    pad = 2
    sheet = np.zeros((rows * (h * k + pad), columns * (w * k + pad), 3), np.uint8)
    for n, (image, pts, bad, idx) in enumerate(zip(images, points, lost, index)):
        tile = np.repeat(np.repeat(_to_uint8(image), k, 0), k, 1)
        tile = np.stack([tile] * 3, axis=-1)
        colour = (255, 40, 40) if bad else (40, 255, 40)
        _draw_polyline(tile, (np.asarray(pts, np.float64) + 0.5) * k, colour)
        _draw_number(tile, idx, (255, 255, 0))
        r, c = divmod(n, columns)
        y, x = r * (h * k + pad), c * (w * k + pad)
        sheet[y:y + h * k, x:x + w * k] = tile
    return sheet


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    finite = image[np.isfinite(image)] if image.dtype.kind == "f" else image
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = np.nan_to_num((image - lo) * 255.0 / max(hi - lo, 1e-9))  # NaN pixels: black
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _draw_polyline(tile, pts, colour) -> None:
    """Draw segments between finite points, sampled every half pixel, 2 px thick."""
    h, w = tile.shape[:2]
    for a, b in zip(pts[:-1], pts[1:]):
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            continue
        n = int(np.hypot(*(b - a)) * 2) + 1
        xy = a[None, :] + np.linspace(0, 1, n)[:, None] * (b - a)[None, :]
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            x = np.clip(xy[:, 0].astype(int) + dx - 1, 0, w - 1)
            y = np.clip(xy[:, 1].astype(int) + dy - 1, 0, h - 1)
            tile[y, x] = colour


def _draw_number(tile, number: int, colour, size: int = 2) -> None:
    x = 2
    for ch in str(int(number)):
        glyph = np.array([int(c) for c in _DIGITS[int(ch)]], bool).reshape(5, 3)
        block = np.repeat(np.repeat(glyph, size, 0), size, 1)
        region = tile[2:2 + block.shape[0], x:x + block.shape[1]]
        region[block[:region.shape[0], :region.shape[1]]] = colour
        x += 4 * size


def first_frame_grid(image: np.ndarray, scale: int = 0) -> np.ndarray:
    """(H', W', 3) uint8: ``image`` enlarged, with grid lines every 10 px (brighter every 50,
    labelled with their pixel coordinate) to read the tail base and tip off."""
    h, w = image.shape[:2]
    k = scale or max(1, math.ceil(600 / w))
    tile = np.repeat(np.repeat(_to_uint8(image), k, 0), k, 1)
    rgb = np.stack([tile] * 3, axis=-1)
    for v in range(0, max(h, w), 10):
        colour = (255, 60, 60) if v % 50 == 0 else (120, 60, 60)
        if v < w:
            rgb[:, v * k] = colour
        if v < h:
            rgb[v * k, :] = colour
        if v % 50 == 0 and v:
            if v < w:
                _draw_number(rgb[:, v * k + 2:], v, (255, 255, 0))
            if v < h:
                _draw_number(rgb[v * k + 2:, :], v, (0, 255, 255))
    return rgb


def write_png(path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as a PNG (zlib, no imaging library needed)."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n"
                           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
