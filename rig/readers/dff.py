"""ΔF/F against a running baseline, frame by frame and causal (no future frames).

The baseline is suite2p's "maximin" (smooth, then a sliding minimum, then a sliding
maximum over ``window_s``, 60 s by default) made causal: the windows trail the current
frame instead of centring on it, and each is kept as a ring of block extrema so that one
frame costs O(N) and one block boundary O(N·blocks). The windows are exact to one block
(``window_s / blocks``, 2 s by default). An imported session goes through the same code,
so imported and live traces agree.
"""
from __future__ import annotations

import numpy as np


class RunningBaseline:
    """Causal maximin baseline and ΔF/F of N traces.

    Parameters
    ----------
    n : number of traces.
    rate_hz : frames per second.
    window_s : length of the min and max windows (s); suite2p's ``win_baseline``.
    smooth_s : time constant of the exponential smoothing before the minimum (s); suite2p
        smooths with a Gaussian of ``sig_baseline`` = 10 frames.
    blocks : window resolution: the windows move in steps of ``window_s / blocks``.
    floor : smallest |baseline| divided by (same units as F), so that a baseline near
        zero (neuropil-corrected F can be) does not blow ΔF/F up.
    """

    def __init__(self, n: int, rate_hz: float, window_s: float = 60.0, smooth_s: float = 0.33,
                 blocks: int = 30, floor: float = 1.0):
        if n < 0:
            raise ValueError(f"RunningBaseline n = {n}: the number of traces must be >= 0")
        if not rate_hz > 0:
            raise ValueError(f"RunningBaseline rate_hz = {rate_hz}: must be > 0 (frames/s)")
        if not window_s > 0 or blocks < 1:
            raise ValueError(f"RunningBaseline window_s = {window_s}, blocks = {blocks}: "
                             "need window_s > 0 and blocks >= 1")
        if not floor > 0:
            raise ValueError(f"RunningBaseline floor = {floor}: must be > 0")
        self.block_len = max(1, int(round(window_s * rate_hz / blocks)))
        self.alpha = np.float32(1.0 - np.exp(-1.0 / max(smooth_s * rate_hz, 1e-9)))
        self.floor = np.float32(floor)
        self.mins = np.full((blocks, n), np.inf, dtype=np.float32)  # block minima of smooth
        self.maxs = np.full((blocks, n), -np.inf, dtype=np.float32)  # block maxima of m
        self.ring_min = np.full(n, np.inf, dtype=np.float32)
        self.ring_max = np.full(n, -np.inf, dtype=np.float32)
        self.cur_min = np.full(n, np.inf, dtype=np.float32)
        self.cur_max = np.full(n, -np.inf, dtype=np.float32)
        self.smooth = np.zeros(n, dtype=np.float32)
        self.baseline = np.zeros(n, dtype=np.float32)
        self._m = np.zeros(n, dtype=np.float32)
        self._tmp = np.zeros(n, dtype=np.float32)
        self.frames = 0
        self._slot = 0

    def update(self, f: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Take one frame's F (N,) and return its ΔF/F (N,) float32 (into ``out`` if given)."""
        if f.shape != self.smooth.shape:
            raise ValueError(f"RunningBaseline.update: got {f.shape} values, expected "
                             f"{self.smooth.shape}")
        if self.frames == 0:
            self.smooth[:] = f
        else:
            np.subtract(f, self.smooth, out=self._tmp)
            self._tmp *= self.alpha
            self.smooth += self._tmp
        np.minimum(self.cur_min, self.smooth, out=self.cur_min)
        np.minimum(self.cur_min, self.ring_min, out=self._m)  # sliding min, causal
        np.maximum(self.cur_max, self._m, out=self.cur_max)
        np.maximum(self.cur_max, self.ring_max, out=self.baseline)  # sliding max of it
        self.frames += 1
        if self.frames % self.block_len == 0:
            self._close_block()
        if out is None:
            out = np.empty_like(self.smooth)
        np.subtract(f, self.baseline, out=out)
        np.abs(self.baseline, out=self._tmp)
        np.maximum(self._tmp, self.floor, out=self._tmp)
        out /= self._tmp
        return out

    def _close_block(self) -> None:
        self.mins[self._slot] = self.cur_min
        self.maxs[self._slot] = self.cur_max
        self._slot = (self._slot + 1) % len(self.mins)
        self.mins.min(axis=0, out=self.ring_min)
        self.maxs.max(axis=0, out=self.ring_max)
        self.cur_min.fill(np.inf)
        self.cur_max.fill(-np.inf)


def dff_offline(f: np.ndarray, rate_hz: float, **kwargs) -> np.ndarray:
    """ΔF/F of (T, N) fluorescence, computed exactly as online (causal, frame by frame)."""
    f = np.asarray(f, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"dff_offline: F must be (frames, neurons), got shape {f.shape}")
    baseline = RunningBaseline(f.shape[1], rate_hz, **kwargs)
    out = np.empty_like(f)
    for t in range(len(f)):
        baseline.update(f[t], out[t])
    return out
