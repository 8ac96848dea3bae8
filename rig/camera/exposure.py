"""Camera time -> acquisition time, and per imaging frame tail labels.

A camera stamps frames with its own clock (GenICam ticks, a driver's counter); the rig
runs on the acquisition clock (``time.time_ns`` of the acquisition PC). ``ClockMap`` fits
acq = offset + scale * cam online from (camera stamp, host receive time) pairs: the scale
by least squares over a window, the offset by the lower envelope, because transfer delay
only ever adds to the host time. ``ExposureAverager`` keeps the recent camera-rate trace
and gives each imaging frame the mean tail angles over its exposure window: the decoder's
training labels, as in NLP4Neuro.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Window(NamedTuple):
    """Camera frames in one imaging frame's exposure window."""

    n_good: int
    n_lost: int
    n_moving: int


class ClockMap:
    """Online map from camera timestamps to the acquisition clock, ns.

    Parameters
    ----------
    window : number of recent (camera, host) pairs used for the fit.
    max_drift : largest believable rate difference between the clocks (crystals differ by
        tens of ppm); over a short span transfer jitter would fit a wild scale, so the fitted
        scale is clipped to ``1 +- max_drift``.
    """

    def __init__(self, window: int = 2000, max_drift: float = 200e-6):
        if window < 2:
            raise ValueError(f"ClockMap.window: expected >= 2 pairs, got {window!r}")
        self._cam = np.zeros(window, dtype=np.float64)
        self._host = np.zeros(window, dtype=np.float64)
        self._n = 0
        self._cam0 = None
        self._host0 = None
        self.max_drift = float(max_drift)
        self.scale = 1.0
        self.offset_ns = 0.0

    def update(self, cam_ns: int, host_ns: int) -> None:
        """Add one pair: the camera's stamp and the host's receive time of the same frame."""
        if self._cam0 is None:
            self._cam0, self._host0 = int(cam_ns), int(host_ns)
        i = self._n % len(self._cam)
        # Relative to the first pair so float64 keeps sub-ns resolution over days.
        self._cam[i] = cam_ns - self._cam0
        self._host[i] = host_ns - self._host0
        self._n += 1
        m = min(self._n, len(self._cam))
        c = self._cam[:m]
        h = self._host[:m]
        if m >= 2 and np.ptp(c) > 0:
            cc = c - c.mean()
            scale = float(np.dot(cc, h - h.mean()) / np.dot(cc, cc))
            self.scale = min(max(scale, 1.0 - self.max_drift), 1.0 + self.max_drift)
        self.offset_ns = float(np.min(h - self.scale * c))

    def to_acq(self, cam_ns: int) -> int:
        """Acquisition-clock time (ns) of a camera stamp."""
        if self._cam0 is None:
            raise ValueError("ClockMap.to_acq: no (camera, host) pair yet; call update() first")
        return int(round(self._host0 + self.offset_ns + self.scale * (cam_ns - self._cam0)))


class ExposureAverager:
    """Recent camera-rate tail trace; mean angles over any imaging frame's exposure window.

    Parameters
    ----------
    n_segments : S.
    capacity : camera frames kept (at least one imaging frame's worth, plus the delay
        before that frame's window is asked for).
    """

    def __init__(self, n_segments: int, capacity: int = 4096):
        if capacity < 1 or n_segments < 1:
            raise ValueError(f"ExposureAverager: need n_segments >= 1 and capacity >= 1, got "
                             f"{n_segments!r}, {capacity!r}")
        self._t = np.full(capacity, np.iinfo(np.int64).min, dtype=np.int64)
        self._a = np.zeros((capacity, n_segments), dtype=np.float32)
        self._ok = np.zeros(capacity, dtype=bool)
        self._moving = np.zeros(capacity, dtype=bool)
        self._n = 0

    def add(self, t_ns: int, angles: np.ndarray, lost: bool = False, moving: bool = False) -> None:
        """Keep one camera frame: acquisition-clock time (ns), angles (S,) rad, lost and
        moving (in a bout, or lost) flags."""
        i = self._n % len(self._t)
        self._t[i] = t_ns
        self._a[i] = angles
        self._ok[i] = not lost
        self._moving[i] = moving or lost
        self._n += 1

    def mean(self, t_start_ns: int, t_end_ns: int, out: np.ndarray) -> Window:
        """Mean angles of good frames with ``t_start_ns <= t < t_end_ns`` into ``out`` (S,).

        Returns
        -------
        Window : ``n_good`` frames used, ``n_lost`` lost frames left out, ``n_moving`` frames
            in a bout or lost. With no good frame ``out`` is NaN: no label beats a wrong one.
        """
        inside = (self._t >= t_start_ns) & (self._t < t_end_ns)
        good = inside & self._ok
        n_good = int(good.sum())
        if n_good:
            np.mean(self._a[good], axis=0, out=out)
        else:
            out[:] = math.nan
        return Window(n_good, int(inside.sum()) - n_good, int((inside & self._moving).sum()))
