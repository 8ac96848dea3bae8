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
    refit_every : pairs between full passes over the window. Per pair the scale comes from
        running sums and the offset from the envelope pair so far (O(1), no allocation); a
        full pass recomputes the sums exactly (no rounding build-up) and the envelope pair
        (the one it had may have left the window, or another lies lower at the new scale).
    """

    def __init__(self, window: int = 2000, max_drift: float = 200e-6, refit_every: int = 32):
        if window < 2:
            raise ValueError(f"ClockMap.window: expected >= 2 pairs, got {window!r}")
        if refit_every < 1:
            raise ValueError(f"ClockMap.refit_every: expected >= 1 pair, got {refit_every!r}")
        self._cam = np.zeros(window, dtype=np.float64)
        self._host = np.zeros(window, dtype=np.float64)
        self._n = 0
        self._cam0 = None
        self._host0 = None
        self.max_drift = float(max_drift)
        self.refit_every = int(refit_every)
        self.scale = 1.0
        self.offset_ns = 0.0
        # sums over the window of c - pc, h - ph, (c - pc)^2, (c - pc)(h - ph); the pivot
        # (pc, ph) is the window's mean at the last full pass, so the squares stay small
        self._pc = self._ph = 0.0
        self._sc = self._sh = self._scc = self._sch = 0.0
        self._k = 0  # slot of the lower-envelope pair

    def update(self, cam_ns: int, host_ns: int) -> None:
        """Add one pair: the camera's stamp and the host's receive time of the same frame."""
        if self._cam0 is None:
            self._cam0, self._host0 = int(cam_ns), int(host_ns)
        w = len(self._cam)
        i = self._n % w
        if self._n >= w:  # slot i's pair leaves the window
            self._add(self._cam[i], self._host[i], -1.0)
        # Relative to the first pair so float64 keeps sub-ns resolution over days.
        c = float(cam_ns - self._cam0)
        h = float(host_ns - self._host0)
        self._cam[i] = c
        self._host[i] = h
        self._n += 1
        if self._n <= self.refit_every or self._n % self.refit_every == 0 or i == self._k:
            self._refit()
            return
        self._add(c, h, 1.0)
        self._fit_scale()
        # transfer delay only ever adds: the lowest pair under the current scale sets the offset
        k = self._k
        if h - self.scale * c < self._host[k] - self.scale * self._cam[k]:
            self._k = k = i
        self.offset_ns = self._host[k] - self.scale * self._cam[k]

    def _add(self, c: float, h: float, sign: float) -> None:
        dc = c - self._pc
        dh = h - self._ph
        self._sc += sign * dc
        self._sh += sign * dh
        self._scc += sign * dc * dc
        self._sch += sign * dc * dh

    def _fit_scale(self) -> None:
        """Least-squares scale from the running sums, clipped to ``1 +- max_drift``."""
        m = min(self._n, len(self._cam))
        var = self._scc - self._sc * self._sc / m
        if m >= 2 and var > 0:
            scale = (self._sch - self._sc * self._sh / m) / var
            self.scale = min(max(scale, 1.0 - self.max_drift), 1.0 + self.max_drift)

    def _refit(self) -> None:
        """A full pass: exact sums about the window's mean, scale, and the envelope pair."""
        m = min(self._n, len(self._cam))
        c = self._cam[:m]
        h = self._host[:m]
        self._pc, self._ph = float(c.mean()), float(h.mean())
        dc = c - self._pc
        dh = h - self._ph
        self._sc, self._sh = float(dc.sum()), float(dh.sum())
        self._scc, self._sch = float(np.dot(dc, dc)), float(np.dot(dc, dh))
        self._fit_scale()
        self._k = int(np.argmin(h - self.scale * c))
        self.offset_ns = float(self._host[self._k] - self.scale * self._cam[self._k])

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
