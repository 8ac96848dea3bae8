"""ROI traces from raw frames, online: motion correction, cell and neuropil sums, ΔF/F.

Per frame (``TraceExtractor.process``):

1. rigid motion: phase correlation of the frame's central ``crop`` x ``crop`` pixels
   against a reference (the mean of the first ``ref_frames`` frames, or one given), integer
   pixels within ±``max_shift`` (scipy.fft in float32: 0.7 ms at 256 x 256);
2. cell F: one pass over a CSR list of mask pixels (numba), reading the frame at the
   shifted position, so the frame itself is never moved or copied; neuropil Fneu: the mean
   over a square ring around each cell of the pixels of no cell, four look-ups each in a
   summed-area table of the shifted frame with the cells masked out;
3. ``F − 0.7·Fneu`` and ΔF/F against a causal running baseline (``rig.readers.dff``).

Masks come from a suite2p ``stat.npy`` (``ypix``, ``xpix``, ``lam``), a label image (H, W)
of ROI ids (0 = background) or a stack of masks (K, H, W). Neuropil rings follow suite2p's
rules (``inner_neuropil_radius`` clear of the cell, at least ``min_neuropil_pixels`` of no
cell) with a square instead of a round outline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rig.readers import FrameSizeError, ReaderError
from rig.readers._kernels import cell_sums, masked_integral, peak_in_window, ring_means
from rig.readers.dff import RunningBaseline


@dataclass
class RoiMasks:
    """Cell masks as pixel lists. ``cells[i]`` = (ys, xs, weights) of ROI i in a (H, W) frame."""

    shape: tuple[int, int]
    cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    source: str = "<memory>"

    def __post_init__(self):
        H, W = self.shape
        for i, (ys, xs, w) in enumerate(self.cells):
            if len(ys) == 0:
                raise ReaderError(f"{self.source}: ROI {i} has no pixels")
            if not (len(ys) == len(xs) == len(w)):
                raise ReaderError(f"{self.source}: ROI {i} has {len(ys)} ypix, {len(xs)} xpix "
                                  f"and {len(w)} weights; they must match")
            if ys.min() < 0 or xs.min() < 0 or ys.max() >= H or xs.max() >= W:
                raise ReaderError(f"{self.source}: ROI {i} reaches pixel ({ys.max()}, "
                                  f"{xs.max()}), outside the {H} x {W} frame: were the ROIs "
                                  "drawn on frames of another size?")

    @property
    def n(self) -> int:
        return len(self.cells)

    def centroids(self) -> np.ndarray:
        """(N, 2) float64 weighted centre of each ROI in pixels, x (column) first."""
        return np.array([(np.average(xs, weights=w), np.average(ys, weights=w))
                         for ys, xs, w in self.cells], dtype=float).reshape(-1, 2)

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_stat(cls, stat, shape, source="stat.npy", keep=None) -> "RoiMasks":
        """suite2p ROIs; ``keep`` (bool per ROI, e.g. iscell) selects some. Pixels that
        suite2p marks as ``overlap`` (shared by two cells) are left out, as suite2p does."""
        cells = []
        for i, roi in enumerate(stat):
            if keep is not None and not keep[i]:
                continue
            try:
                ys = np.asarray(roi["ypix"], dtype=np.int32)
                xs = np.asarray(roi["xpix"], dtype=np.int32)
            except (KeyError, TypeError):
                raise ReaderError(f"{source}: ROI {i} has no ypix/xpix (is this a suite2p "
                                  "stat.npy?)") from None
            lam = roi.get("lam") if hasattr(roi, "get") else None
            w = np.ones(len(ys), np.float32) if lam is None else np.asarray(lam, np.float32)
            overlap = roi.get("overlap") if hasattr(roi, "get") else None
            if overlap is not None and len(overlap) == len(ys) and not np.all(overlap):
                alone = ~np.asarray(overlap, dtype=bool)
                ys, xs, w = ys[alone], xs[alone], w[alone]
            cells.append((ys, xs, w))
        return cls(tuple(shape), cells, source)

    @classmethod
    def from_labels(cls, labels: np.ndarray, source="labels") -> "RoiMasks":
        labels = np.asarray(labels)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ReaderError(f"{source}: a label image is (H, W) integers, got "
                              f"{labels.dtype} {labels.shape}")
        ys, xs = np.nonzero(labels)
        ids = labels[ys, xs]
        order = np.argsort(ids, kind="stable")
        ids, ys, xs = ids[order], ys[order].astype(np.int32), xs[order].astype(np.int32)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        cells = [(ys[a:b], xs[a:b], np.ones(b - a, np.float32)) for a, b in zip(starts, ends)]
        return cls(labels.shape, cells, source)

    @classmethod
    def from_masks(cls, masks: np.ndarray, source="masks") -> "RoiMasks":
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ReaderError(f"{source}: a mask stack is (K, H, W), got shape {masks.shape}")
        cells = []
        for m in masks:
            ys, xs = np.nonzero(m)
            cells.append((ys.astype(np.int32), xs.astype(np.int32),
                          np.asarray(m[ys, xs], dtype=np.float32)))
        return cls(masks.shape[1:], cells, source)

    @staticmethod
    def needs_shape(path: str | Path) -> bool:
        """Whether ``path`` is a stat.npy-like object array, which needs the frame shape."""
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                return read(f)[2].hasobject
        except (OSError, ValueError):
            return False  # load() will say what is wrong with it

    @classmethod
    def load(cls, path: str | Path, shape: tuple[int, int] | None = None) -> "RoiMasks":
        """From ``stat.npy`` (needs ``shape``; with an ``iscell.npy`` beside it, only the
        ROIs labelled cells, as the suite2p importer keeps), a label image or a mask stack."""
        from rig.recording.format import RecordingError
        from rig.recording.importers import load_npy

        path = Path(path)
        if not path.is_file():
            raise ReaderError(f"{path}: ROI file missing (give a suite2p stat.npy, a label "
                              "image or a mask stack saved as .npy)")
        try:
            data = load_npy(path)
        except RecordingError as exc:
            raise ReaderError(str(exc)) from None
        if data.dtype == object:
            if shape is None:
                raise ReaderError(f"{path}: a stat.npy does not know the frame size; give "
                                  "the frame shape (H, W)")
            keep = None
            if (path.parent / "iscell.npy").is_file():  # suite2p's cell labels beside it
                iscell = load_npy(path.parent / "iscell.npy")
                if len(iscell) != len(data):
                    raise ReaderError(f"{path.parent / 'iscell.npy'}: {len(iscell)} rows, "
                                      f"{path.name} has {len(data)} ROIs")
                keep = np.asarray(iscell).reshape(len(data), -1)[:, 0] > 0.5
            return cls.from_stat(data, shape, str(path), keep)
        masks = cls.from_labels(data, str(path)) if data.ndim == 2 else \
            cls.from_masks(data, str(path))
        if shape is not None and tuple(masks.shape) != tuple(shape):
            raise ReaderError(f"{path}: masks are {masks.shape[0]} x {masks.shape[1]}, frames "
                              f"{shape[0]} x {shape[1]}")
        return masks


def cell_mask(masks: RoiMasks) -> np.ndarray:
    """(H, W) bool: pixels that belong to some cell."""
    in_cell = np.zeros(masks.shape, dtype=bool)
    for ys, xs, _ in masks.cells:
        in_cell[ys, xs] = True
    return in_cell


def neuropil_rings(masks: RoiMasks, inner_radius: int = 2, min_pixels: int = 350,
                   max_radius: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Per cell a square ring around it: the inner square clears the cell's extent by
    ``inner_radius`` pixels, the outer one grows until the ring holds ``min_pixels`` pixels
    of no cell (suite2p's ``inner_neuropil_radius`` and ``min_neuropil_pixels``; a square
    ring so that its sum is four look-ups in a summed-area table).

    Returns boxes (N, 8) int32 (outer y0 y1 x0 x1, inner y0 y1 x0 x1, half-open, clipped to
    the frame) and counts (N,) float32 of non-cell pixels in each ring.
    """
    H, W = masks.shape
    keep = ~cell_mask(masks)
    sat = np.zeros((H + 1, W + 1), dtype=np.int64)
    sat[1:, 1:] = keep.cumsum(0).cumsum(1)

    def box(cy, cx, h):
        return (max(cy - h, 0), min(cy + h + 1, H), max(cx - h, 0), min(cx + h + 1, W))

    def count(b):
        y0, y1, x0, x1 = b
        return sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]

    boxes = np.zeros((masks.n, 8), dtype=np.int32)
    counts = np.zeros(masks.n, dtype=np.float32)
    for i, (ys, xs, _) in enumerate(masks.cells):
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        extent = int(max(np.abs(ys - cy).max(), np.abs(xs - cx).max()))
        inner = box(cy, cx, extent + inner_radius)
        h = extent + inner_radius + 1
        while True:
            outer = box(cy, cx, h)
            n = count(outer) - count(inner)
            if n >= min_pixels or h >= max_radius:
                break
            h += 1
        boxes[i] = (*outer, *inner)
        counts[i] = n
    return boxes, counts


class MotionCorrector:
    """Rigid, integer-pixel shift of each frame against a reference by phase correlation.

    Parameters
    ----------
    shape : (H, W) of the frames.
    reference : (H, W) image, or None to average the first ``ref_frames`` frames.
    crop : side of the central square that is correlated (pixels; the frame if smaller).
    max_shift : largest shift looked for (pixels).
    """

    def __init__(self, shape, reference=None, crop: int = 256, max_shift: int = 20,
                 ref_frames: int = 20):
        import scipy.fft

        self._fft = scipy.fft
        H, W = shape
        c = min(crop, H, W)
        if not 0 <= max_shift < c // 2:
            raise ReaderError(f"max_shift = {max_shift}: must be in [0, {c // 2}) for a "
                              f"{c}-pixel crop")
        self.max_shift = int(max_shift)
        self.window = (slice((H - c) // 2, (H - c) // 2 + c), slice((W - c) // 2, (W - c) // 2 + c))
        self.crop_shape = (c, c)
        self._buf = np.zeros((c, c), dtype=np.float32)
        # Tapered edges (as suite2p's spatial taper): the crop's borders are not periodic,
        # and with whitening their jump would make a false peak at zero shift.
        ramp = np.minimum(1.0, np.minimum(np.arange(c), np.arange(c)[::-1]) / max(c / 8, 1))
        self._taper = (np.sin(ramp * np.pi / 2) ** 2).astype(np.float32)
        self._taper = self._taper[:, None] * self._taper[None, :]
        self.ref_frames = ref_frames
        self._ref_sum = np.zeros((c, c), dtype=np.float64)
        self._ref_n = 0
        self._ref_fft = None
        if reference is not None:
            reference = np.asarray(reference)
            if reference.shape != tuple(shape):
                raise ReaderError(f"reference image is {reference.shape}, frames are {shape}")
            self._set_reference(reference[self.window].astype(np.float32))

    def _set_reference(self, crop: np.ndarray) -> None:
        R = self._fft.rfft2((crop - crop.mean()) * self._taper)
        # Whitened (phase only) and low-passed: sharp peak, robust to shot noise.
        ky = self._fft.fftfreq(crop.shape[0])[:, None]
        kx = self._fft.rfftfreq(crop.shape[1])[None, :]
        lowpass = np.exp(-2 * (np.pi * 1.15) ** 2 * (ky ** 2 + kx ** 2))  # suite2p smooth_sigma
        self._ref_fft = (np.conj(R) / (np.abs(R) + 1e-6) * lowpass).astype(np.complex64)

    @property
    def ready(self) -> bool:
        return self._ref_fft is not None

    def shift(self, frame: np.ndarray) -> tuple[int, int]:
        """(dy, dx) such that frame[y + dy, x + dx] shows what the reference shows at (y, x)."""
        np.copyto(self._buf, frame[self.window], casting="unsafe")
        if self._ref_fft is None:
            self._ref_sum += self._buf
            self._ref_n += 1
            if self._ref_n >= self.ref_frames:
                self._set_reference((self._ref_sum / self._ref_n).astype(np.float32))
            return 0, 0
        self._buf -= self._buf.mean()
        self._buf *= self._taper
        X = self._fft.rfft2(self._buf)
        X /= np.abs(X) + 1e-6  # whiten first, so the reference's low-pass stays in
        X *= self._ref_fft
        corr = self._fft.irfft2(X, s=self.crop_shape)
        return peak_in_window(corr, self.max_shift)


class TraceExtractor:
    """Raw frame in, ΔF/F of every ROI out, one frame at a time.

    Parameters
    ----------
    masks : the ROIs.
    rate_hz : frame rate (for the baseline window).
    neuropil : neuropil coefficient (suite2p: 0.7).
    motion : correct rigid motion (True: a default ``MotionCorrector``; or one; or False).
    baseline : keyword arguments of ``RunningBaseline`` (``window_s``, ``floor``...).
    **ring : keyword arguments of ``neuropil_rings`` (``inner_radius``, ``min_pixels``).
    """

    def __init__(self, masks: RoiMasks, rate_hz: float, neuropil: float = 0.7,
                 motion: bool | MotionCorrector = True, baseline: dict | None = None, **ring):
        self.masks = masks
        self.shape = tuple(masks.shape)
        self.neuropil = np.float32(neuropil)
        self.motion = (MotionCorrector(self.shape) if motion is True else motion) or None
        lengths = np.array([len(ys) for ys, _, _ in masks.cells], dtype=np.int64)
        self.indptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        self.ys = np.concatenate([c[0] for c in masks.cells]).astype(np.int32)
        self.xs = np.concatenate([c[1] for c in masks.cells]).astype(np.int32)
        # weights sum to 1 per cell, as suite2p normalises lam
        self.weights = np.concatenate([w / w.sum() for _, _, w in masks.cells]).astype(np.float32)
        self.boxes, self.counts = neuropil_rings(masks, **ring)
        self.keep = (~cell_mask(masks)).astype(np.float32)
        self._sat = np.zeros((self.shape[0] + 1, self.shape[1] + 1), dtype=np.float64)
        self.f = np.zeros(masks.n, dtype=np.float32)
        self.fneu = np.zeros(masks.n, dtype=np.float32)
        self.fc = np.zeros(masks.n, dtype=np.float32)
        self.baseline = RunningBaseline(masks.n, rate_hz, **(baseline or {}))
        self.last_shift = (0, 0)

    @property
    def n(self) -> int:
        return self.masks.n

    def check(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape:
            raise FrameSizeError(f"frame is {frame.shape[0]} x {frame.shape[1]} pixels, the ROIs "
                              f"are for {self.shape[0]} x {self.shape[1]}: check the "
                              "acquisition settings or the ROI file")

    def process(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """ΔF/F (N,) float32 of one (H, W) frame (into ``out`` if given)."""
        self.check(frame)
        dy, dx = self.motion.shift(frame) if self.motion is not None else (0, 0)
        self.last_shift = (int(dy), int(dx))
        cell_sums(frame, self.indptr, self.ys, self.xs, self.weights, dy, dx, self.f)
        masked_integral(frame, self.keep, dy, dx, self._sat)
        ring_means(self._sat, self.boxes, self.counts, self.fneu)
        np.multiply(self.fneu, self.neuropil, out=self.fc)
        np.subtract(self.f, self.fc, out=self.fc)
        return self.baseline.update(self.fc, out)
