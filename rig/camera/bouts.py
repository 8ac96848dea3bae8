"""Online vigour and swim bouts from the cumulative tail angle.

Vigour is the rolling standard deviation of the cumulative tail angle over a short window
(~50 ms). A bout starts when vigour rises above ``on`` and ends when it falls below ``off``
(hysteresis: ``off`` < ``on``, so noise near one threshold cannot flicker the state). The
stimulation gate asks ``moving``; a lost trace counts as moving, so a stimulation is never
gated on a frame nobody could read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rig.camera import _kernels as K


@dataclass(frozen=True)
class Bout:
    """One swim bout. Frames count camera frames fed to the detector (lost ones included)."""

    start: int  # first camera frame in the bout
    end: int  # first camera frame after it
    duration_s: float
    max_angle: float  # rad, signed cumulative angle of largest magnitude during the bout
    direction: int  # +1 when max_angle > 0, else -1 (see tracker's angle convention)

    @property
    def side(self) -> str:
        """'left' for direction +1, 'right' for -1, in the tracker's image convention
        (positive angles turn clockwise on screen; with the head up and the camera below
        the fish, flip if your optics mirror the image)."""
        return "left" if self.direction > 0 else "right"


class BoutDetector:
    """Rolling vigour and bout state, one camera frame at a time.

    Parameters
    ----------
    fps : camera frame rate, Hz.
    window_s : vigour window, s (about 50 ms in the field).
    on, off : vigour thresholds, rad; a bout starts above ``on`` and ends below ``off``.
    """

    def __init__(self, fps: float, window_s: float = 0.05, on: float = 0.08, off: float = 0.03):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"BoutDetector.fps: expected a camera rate > 0 Hz, got {fps!r}")
        if not (math.isfinite(window_s) and window_s * fps >= 2):
            raise ValueError(f"BoutDetector.window_s: {window_s!r} s holds fewer than 2 frames at "
                             f"{fps:g} Hz; use window_s >= {2 / fps:.4g}")
        if not (0 <= off < on):
            raise ValueError(f"BoutDetector.on/off: expected 0 <= off < on (rad), got on={on!r}, "
                             f"off={off!r}; the end threshold must sit below the start one")
        self.fps = float(fps)
        self.window_s = float(window_s)
        self.on = float(on)
        self.off = float(off)
        self._ring = np.zeros(int(round(window_s * fps)))
        self._state = np.zeros(K.N_STATE)
        self.vigour = 0.0
        self.lost = False
        self.n_lost = 0
        self.bouts: list[Bout] = []

    @property
    def in_bout(self) -> bool:
        """True between a bout's start and end."""
        return bool(self._state[K.S_IN_BOUT] != 0.0)

    @property
    def moving(self) -> bool:
        """The stimulation gate's question: in a bout, or the last trace was lost."""
        return self.in_bout or self.lost

    @property
    def n_frames(self) -> int:
        return int(self._state[K.S_N])

    def update(self, cum_angle: float, lost: bool = False) -> Bout | None:
        """Fold one camera frame in; return the ``Bout`` that ended on it, else None.

        A lost (or non-finite) frame repeats the last good angle, so it neither starts nor
        ends a bout by itself, and sets ``moving`` until the next good frame.
        """
        self.lost = bool(lost) or not math.isfinite(cum_angle)
        if self.lost:
            self.n_lost += 1
            cum_angle = self._state[K.S_LAST]
        event, self.vigour = K.bout_step(self._ring, self._state, float(cum_angle), self.on,
                                         self.off)
        if event == -1:
            return self._close(int(self._state[K.S_N]) - 1)
        return None

    def finish(self) -> Bout | None:
        """End of the recording: close a bout still open (ending after the last frame)."""
        if not self.in_bout:
            return None
        self._state[K.S_IN_BOUT] = 0.0
        return self._close(self.n_frames)

    def _close(self, end: int) -> Bout:
        bout = _bout(int(self._state[K.S_START]), end, self.fps, float(self._state[K.S_PEAK]))
        self.bouts.append(bout)
        return bout


def _bout(start: int, end: int, fps: float, peak: float) -> Bout:
    """A ``Bout`` over camera frames [start, end), largest cumulative angle ``peak`` rad."""
    return Bout(int(start), int(end), (end - start) / fps, float(peak), 1 if peak > 0 else -1)


def _peak(seg: np.ndarray) -> float:
    """The signed value of largest magnitude."""
    return float(seg[np.argmax(np.abs(seg))])


def detect_bouts(cum_angle: np.ndarray, fps: float, window_s: float = 0.05, on: float = 0.08,
                 off: float = 0.03) -> tuple[list[Bout], np.ndarray]:
    """Offline bouts over a whole trace, with exactly the online detector's kernel.

    Parameters
    ----------
    cum_angle : (T,) cumulative tail angle per camera frame, rad.

    Returns
    -------
    bouts : bouts that ended within the trace (one still open at the end is closed there).
    vigour : (T,) float64, rad.
    """
    x = np.ascontiguousarray(cum_angle, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"cum_angle: expected a 1-D trace, got shape {x.shape}")
    det = BoutDetector(fps, window_s, on, off)
    events = np.zeros(len(x), dtype=np.int64)
    vigour = np.zeros(len(x))
    K.bout_run(x, det._ring, det._state, det.on, det.off, events, vigour)
    bouts: list[Bout] = []
    start = None
    for t in np.flatnonzero(events):
        if events[t] == 1:
            start = t
        else:  # the online kernel folds the end frame into the peak too
            bouts.append(_bout(start, t, fps, _peak(x[start:t + 1])))
            start = None
    if start is not None:
        bouts.append(_bout(start, len(x), fps, _peak(x[start:])))
    return bouts, vigour
