"""Holographic targets: neuron ids -> microscope coordinates -> SLM phase mask.

Targets are (x, y, z) um in the imaging frame (ROI centroids). A calibration maps them to
the SLM's Fourier plane: ``Calibration.matrix`` (2, 4) takes homogeneous (x, y, z, 1) um to
(u, v) pixels of the far field (x first, as slmsuite writes vectors); ``stim.calibration``
fits it at the rig (``rig calibrate slm``). Far-field pixel (u, v) is where a phase ramp
2 pi (u x / W + v y / H) on the SLM sends the light: index (v, u) of ``fft2``.

The phase mask is found by weighted Gerchberg–Saxton (Di Leonardo et al. 2007): iterate
between SLM and far field, keep the phase, and re-weight each spot by mean(amplitude) /
amplitude so the spots come out with the powers asked. Power per target is amplitude
squared (slmsuite#127). ``pad`` computes the far field on a grid ``pad`` times finer (the
SLM zero-padded), so spots land within 1 / (2 pad) far-field pixel of their target instead
of 1/2. Axial position is not modelled here (a real driver adds a per-spot Fresnel lens); z
only enters through the calibration. Known limit: two spots whose separation is odd in a
pixel axis settle at ~0.8 uniformity (the phase goes binary); three or more reach > 0.99.
slmsuite's algorithms (``method = "WGS-Kim"``, ...) are an option where installed.

Runs in torch on the GPU when there is one; an LRU cache keyed by the target set and powers
serves a repeated ensemble without recomputing its mask.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Affine map from imaging-frame um (x, y, z) to SLM far-field pixels (u, v).

    matrix : (2, 4) float; shape : (H, W) SLM pixels; zero_order_px : radius around the
    undiffracted spot (centre) that no target may fall in.
    """

    matrix: np.ndarray
    shape: tuple[int, int] = (256, 256)
    zero_order_px: float = 3.0

    def __post_init__(self):
        m = np.asarray(self.matrix, dtype=float)
        if m.shape != (2, 4):
            raise ValueError(f"Calibration.matrix: shape {m.shape}, expected (2, 4) mapping "
                             "(x, y, z, 1) um to (u, v) pixels")
        object.__setattr__(self, "matrix", m)

    def to_slm(self, xyz_um: np.ndarray) -> np.ndarray:
        """(K, 3) um -> (K, 2) float far-field pixel (u, v), centred on the zero order.

        Raises ValueError naming the target when a spot falls off the SLM's field or on the
        zero-order block.
        """
        xyz = np.asarray(xyz_um, dtype=float)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"targets: shape {xyz.shape}, expected (K, 3) um (x, y, z)")
        uv = np.c_[xyz, np.ones(len(xyz))] @ self.matrix.T
        H, W = self.shape
        bad = (np.abs(uv[:, 0]) >= W // 2) | (np.abs(uv[:, 1]) >= H // 2)
        if bad.any():
            raise ValueError(f"targets {np.flatnonzero(bad).tolist()}: outside the SLM field; "
                             "check the calibration or drop them")
        zero = np.hypot(uv[:, 0], uv[:, 1]) < self.zero_order_px
        if zero.any():
            raise ValueError(f"targets {np.flatnonzero(zero).tolist()}: on the zero-order block")
        return uv

    def to_imaging(self, uv: np.ndarray, z_um=0.0) -> np.ndarray:
        """(K, 2) far-field pixels -> (K, 2) imaging um (x, y) at depth ``z_um`` (scalar or
        (K,)): the inverse of ``to_slm``, where spots aimed at ``uv`` land."""
        uv = np.asarray(uv, dtype=float).reshape(-1, 2)
        c = np.outer(np.broadcast_to(z_um, len(uv)), self.matrix[:, 2]) + self.matrix[:, 3]
        return np.linalg.solve(self.matrix[:, :2], (uv - c).T).T


def wgs(uv: np.ndarray, shape: tuple[int, int], power=None, iterations: int = 20,
        device: str | None = None, seed: int = 0, pad: int = 1):
    """Weighted Gerchberg–Saxton phase for spots at far-field pixels ``uv``.

    Parameters
    ----------
    uv : (K, 2) pixel offsets from the zero order (u = column, v = row), rounded to the
        nearest 1 / ``pad`` pixel.
    shape : (H, W) SLM pixels; power : (K,) relative power per spot (default equal).
    iterations : WGS iterations; device : torch device (default cuda when available).
    seed : initial random phase; pad : far-field oversampling (cost grows as pad squared).

    Returns
    -------
    phase : (H, W) float32 radians in [0, 2 pi); uniformity : 1 - (max - min)/(max + min) of
    spot power relative to the requested power; efficiency : fraction of light in the spots.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    H, W = shape
    PH, PW = pad * H, pad * W
    uv = np.rint(np.asarray(uv, dtype=float) * pad).astype(np.int64)
    k = len(uv)
    want = np.ones(k) if power is None else np.asarray(power, dtype=float)
    if want.shape != (k,) or np.any(want <= 0):
        raise ValueError("power: expected (K,) positive relative powers")
    target_amp = torch.as_tensor(np.sqrt(want / want.sum()), dtype=torch.float32, device=dev)
    rows = torch.as_tensor(uv[:, 1] % PH, device=dev)
    cols = torch.as_tensor(uv[:, 0] % PW, device=dev)
    g = torch.Generator(device="cpu").manual_seed(seed)
    phase = (torch.rand((H, W), generator=g) * 2 * torch.pi).to(dev)
    weights = target_amp.clone()
    ones = torch.ones((H, W), device=dev)
    norm = (PH * PW) ** 0.5  # sum |far|^2 = H * W, the light the SLM sends, at any pad
    for _ in range(iterations):
        # torch.polar: ~5x cheaper than exp(1j * phase) on CPU; s= zero-pads to the grid
        far = torch.fft.fft2(torch.polar(ones, phase), s=(PH, PW)) / norm
        spot = far[rows, cols]
        amp = spot.abs()
        ratio = amp / target_amp
        # damped (square root): the undamped update oscillates for two spots
        weights = weights * (ratio.mean() / ratio.clamp_min(1e-12)) ** 0.5
        field = torch.zeros((PH, PW), dtype=torch.complex64, device=dev)
        field[rows, cols] = torch.polar(weights, spot.angle())
        phase = torch.fft.ifft2(field)[:H, :W].angle()
    far = torch.fft.fft2(torch.polar(ones, phase), s=(PH, PW)) / norm
    amp = far[rows, cols].abs()
    rel = (amp ** 2 / target_amp ** 2).cpu().numpy()
    uniformity = float(1 - (rel.max() - rel.min()) / (rel.max() + rel.min()))
    # unit-amplitude SLM: total power H*W; a padded grid samples each spot's peak, which
    # holds 1 / pad^2 of the spot's power
    efficiency = float((amp ** 2).sum().cpu()) * pad * pad / (H * W)
    return (torch.remainder(phase, 2 * torch.pi).float().cpu().numpy(), uniformity, efficiency)


def slmsuite_phase(uv: np.ndarray, shape: tuple[int, int], power=None, iterations: int = 20,
                   method: str = "WGS-Kim", pad: int = 1) -> np.ndarray:
    """The same spots as ``wgs`` by one of slmsuite's algorithms (``SpotHologram``).

    Parameters as ``wgs``; method : a ``SpotHologram.optimize`` method ("GS", "WGS-Leonardo",
    "WGS-Kim", "WGS-Nogrette", ...). Needs the ``rig[slm]`` extra. Returns (H, W) float32
    radians in [0, 2 pi), in Rig's convention (checked against ``fft2`` in the tests).
    """
    try:
        from slmsuite.holography.algorithms import SpotHologram
    except ImportError:
        raise ValueError(f"hologram method {method!r} needs slmsuite: pip install "
                         "'rig[slm]', or use method = \"rig\"") from None
    H, W = shape
    # slmsuite's "knm" basis: padded far-field pixels with the zero order at the centre
    knm = np.rint(np.asarray(uv, dtype=float) * pad).T + np.array([[pad * W // 2],
                                                                  [pad * H // 2]])
    amp = None if power is None else np.sqrt(np.asarray(power, dtype=float))
    hologram = SpotHologram((pad * H, pad * W), knm, basis="knm", spot_amp=amp,
                            slm_shape=(H, W))
    with np.errstate(divide="ignore"):  # slmsuite divides by the zero target off the spots
        hologram.optimize(method, maxiter=iterations, verbose=False)
    return np.mod(np.asarray(hologram.get_phase(), dtype=np.float32), 2 * np.pi)


class HologramCache:
    """LRU cache of phase masks keyed by the target set and their powers.

    Parameters
    ----------
    positions_um : (N, 3) neuron centroids (x, y, z) in um; calibration : ``Calibration``.
    maxsize : masks kept; iterations : WGS iterations per mask; pad : far-field oversampling.
    method : "rig" (``wgs``) or a slmsuite algorithm (``slmsuite_phase``).
    """

    def __init__(self, positions_um: np.ndarray, calibration: Calibration, maxsize: int = 64,
                 iterations: int = 20, pad: int = 1, method: str = "rig"):
        pos = np.asarray(positions_um, dtype=float)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"positions_um: shape {pos.shape}, expected (N, 3) um")
        self.positions = pos
        self.calibration = calibration
        self.maxsize = int(maxsize)
        self.iterations = int(iterations)
        self.pad = int(pad)
        self.method = method
        self._cache: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(targets, power_mw) -> tuple:
        order = np.argsort(targets)
        return (tuple(np.asarray(targets)[order].tolist()),
                tuple(np.round(np.asarray(power_mw, dtype=float)[order], 3).tolist()))

    def aimed_um(self, targets) -> np.ndarray:
        """(K, 2) float32 imaging um (x, y) where the spots for ``targets`` land: their
        positions moved to the hologram's far-field grid (what the dashboard draws)."""
        xyz = self.positions[np.asarray(targets, dtype=np.int64)]
        uv = np.rint(self.calibration.to_slm(xyz) * self.pad) / self.pad
        return self.calibration.to_imaging(uv, xyz[:, 2]).astype(np.float32)

    def get(self, targets, power_mw) -> np.ndarray:
        """(H, W) float32 phase for ``targets`` (neuron ids) at ``power_mw`` (mW each)."""
        key = self.key(targets, power_mw)
        if key in self._cache:
            self.hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.misses += 1
        t = np.asarray(key[0], dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() >= len(self.positions)):
            raise ValueError(f"targets: ids must be in [0, {len(self.positions)})")
        uv = self.calibration.to_slm(self.positions[t])
        power = np.asarray(key[1]) + 1e-9
        if self.method == "rig":
            phase, _, _ = wgs(uv, self.calibration.shape, power, self.iterations, pad=self.pad)
        else:
            phase = slmsuite_phase(uv, self.calibration.shape, power, self.iterations,
                                   self.method, self.pad)
        self._cache[key] = phase
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return phase
