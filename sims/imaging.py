"""Raw microscope plane images of the simulated fish, for the acquisition readers' tests.

A ``PlaneImager`` takes the neurons lying in one z-slab, gives each a footprint (a 2-D
Gaussian blob of a few pixels, suite2p-style ``stat`` entries with ``ypix``, ``xpix``,
``lam``, ``med``, ``npix``) and renders uint16 frames from dF/F: a dim smooth background,
each ROI's fluorescence ``brightness * (1 + dF/F)`` spread over its footprint, Poisson-like
noise and an optional rigid (integer-pixel) motion shift. ROI extraction then has a known
answer: ``roi_ids`` (which fish neuron each ROI is) and ``stat``.
"""
from __future__ import annotations

import numpy as np


class PlaneImager:
    """Render one imaging plane of a fish.

    Parameters
    ----------
    positions : (N, 3) float um neuron centroids (x, y, z), e.g. ``fish.positions``.
    z_um : plane depth, um; neurons within ``thickness_um / 2`` of it are imaged.
    shape : (H, W) pixels.
    pixel_um : pixel size, um; the plane is centred on the imaged neurons' x/y extent.
    radius_px : footprint radius (Gaussian sd = radius / 2), pixels.
    baseline : background counts; gain : counts per unit fluorescence at the ROI centre.
    seed : noise and footprint jitter.
    """

    def __init__(self, positions, z_um: float = 150.0, shape=(512, 512), pixel_um: float = 2.0,
                 thickness_um: float = 10.0, radius_px: float = 4.0, baseline: float = 100.0,
                 gain: float = 400.0, seed: int = 0):
        pos = np.asarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"PlaneImager(positions): need (N, 3) um, got shape {pos.shape}")
        h, w = (int(v) for v in shape)
        if h < 8 or w < 8:
            raise ValueError(f"PlaneImager(shape={shape}): need at least 8x8 pixels")
        if not (pixel_um > 0 and thickness_um > 0 and radius_px > 0):
            raise ValueError("PlaneImager: pixel_um, thickness_um and radius_px must be > 0")
        self.shape = (h, w)
        self.baseline, self.gain = float(baseline), float(gain)
        self._rng = np.random.default_rng(seed)
        ids = np.flatnonzero(np.abs(pos[:, 2] - z_um) <= thickness_um / 2)
        # Image axes: row = x (rostro-caudal), column = y, centred on the plane's neurons.
        centre = pos[ids, :2].mean(axis=0) if ids.size else np.zeros(2)
        rc = (pos[ids, :2] - centre) / pixel_um + np.array([h / 2, w / 2])
        r = int(np.ceil(radius_px))
        inside = ((rc[:, 0] >= r) & (rc[:, 0] < h - r) & (rc[:, 1] >= r) & (rc[:, 1] < w - r))
        self.roi_ids = ids[inside].astype(np.int32)  # fish neuron id of each ROI
        rc = rc[inside]
        self.brightness = np.exp(0.3 * self._rng.standard_normal(len(rc)))
        dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
        sd = radius_px / 2.0
        self.stat: list[dict] = []
        pix, roi, lam_all = [], [], []
        for i, (yc, xc) in enumerate(rc):
            y0, x0 = int(round(yc)), int(round(xc))
            yy, xx = (y0 + dy).ravel(), (x0 + dx).ravel()
            lam = np.exp(-((yy - yc) ** 2 + (xx - xc) ** 2) / (2 * sd * sd))
            keep = lam > 0.05
            yy, xx, lam = yy[keep], xx[keep], lam[keep].astype(np.float32)
            self.stat.append({"ypix": yy.astype(np.int32), "xpix": xx.astype(np.int32), "lam": lam,
                              "med": np.array([y0, x0], np.int32), "npix": int(lam.size),
                              "iplane": 0})
            pix.append(yy * w + xx)
            roi.append(np.full(lam.size, i, np.int32))
            lam_all.append(lam)
        self._pix = np.concatenate(pix) if pix else np.zeros(0, np.int64)
        self._roi = np.concatenate(roi) if roi else np.zeros(0, np.int32)
        self._lam = np.concatenate(lam_all) if lam_all else np.zeros(0, np.float32)
        yg, xg = np.mgrid[0:h, 0:w]
        # Smooth background (neuropil/autofluorescence) so that the image is not flat.
        self._background = baseline * (1.0 + 0.3 * np.sin(yg / h * np.pi) * np.sin(xg / w * np.pi))

    @property
    def n_rois(self) -> int:
        return len(self.roi_ids)

    def render_stack(self, traces, shifts=None, noise: bool = True) -> np.ndarray:
        """(T, H, W) uint16 frames from dF/F (T, N) (or (T, n_rois)); ``shifts`` (T, 2) px."""
        traces = np.asarray(traces)
        if traces.ndim != 2:
            raise ValueError(f"PlaneImager.render_stack(traces): need (frames, neurons), got "
                             f"shape {traces.shape}")
        if shifts is not None and np.shape(shifts) != (len(traces), 2):
            raise ValueError(f"PlaneImager.render_stack(shifts): need ({len(traces)}, 2) "
                             f"(dy, dx) per frame, got shape {np.shape(shifts)}")
        out = np.empty((len(traces), *self.shape), np.uint16)
        for t, dff in enumerate(traces):
            out[t] = self.render(dff, (0, 0) if shifts is None else shifts[t], noise)
        return out

    def render(self, dff, shift=(0, 0), noise: bool = True) -> np.ndarray:
        """One uint16 (H, W) frame from the fish's dF/F (N,) (or the ROIs' dF/F (n_rois,)).

        ``shift`` (dy, dx) integer pixels moves the whole image rigidly (motion); pixels
        shifted in from outside hold the background.
        """
        dff = np.asarray(dff, dtype=np.float64)
        if dff.ndim != 1:
            raise ValueError(f"PlaneImager.render(dff): need a 1-D array, got shape {dff.shape}")
        if dff.shape[0] != self.n_rois:
            if dff.shape[0] <= (self.roi_ids.max() if self.n_rois else -1):
                raise ValueError(f"PlaneImager.render(dff): {dff.shape[0]} values; give the fish's "
                                 f"N dF/F values or one per ROI ({self.n_rois})")
            dff = dff[self.roi_ids]
        h, w = self.shape
        f = self.gain * self.brightness * np.maximum(1.0 + dff, 0.0)
        img = self._background.ravel() + np.bincount(self._pix, weights=self._lam * f[self._roi],
                                                      minlength=h * w)
        img = img.reshape(h, w)
        dy, dx = (int(s) for s in shift)
        if abs(dy) >= h or abs(dx) >= w:
            raise ValueError(f"PlaneImager.render(shift={shift}): must be smaller than the "
                             f"image {h}x{w}")
        if dy or dx:
            moved = self._background.copy()
            moved[_dst(dy, h), _dst(dx, w)] = img[_src(dy, h), _src(dx, w)]
            img = moved
        if noise:
            img = img + np.sqrt(img) * self._rng.standard_normal(img.shape)
        return np.clip(np.round(img), 0, 65535).astype(np.uint16)


def _src(d: int, n: int) -> slice:
    """Source rows/columns of a shift by ``d`` pixels along an axis of length ``n``."""
    return slice(0, n - d) if d >= 0 else slice(-d, n)


def _dst(d: int, n: int) -> slice:
    return slice(d, n) if d >= 0 else slice(0, n + d)
