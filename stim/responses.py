"""From activity after a stimulation to the outcome vector of that test.

A neuron responded when its peak dF/F over the response window (the frame the stimulation
landed in and the next ones: responses start within it and a GCaMP transient peaks a volume
or two later) exceeds its mean over the baseline window (frames before) by ``threshold``
(dF/F units), or by ``z`` baseline standard deviations, whichever is larger. The peak
rather than the mean: on the simulated fish (GCaMP6s, 2 Hz) it misses 0.31 of the
responses at 0.05 false positives, the mean 0.41. The stimulated
neurons are marked unobserved (their own opsin response says nothing about connectivity),
and so are neurons with a non-finite trace. A stimulation is confounded when the decoded
behaviour (the camera's bouts, or the decoder's where no camera runs) says the fish moved in
its own baseline or response window, not merely near it: motor activity drives many neurons
at once and would read as responses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stim.model import RESPONDED, SILENT, UNOBSERVED


@dataclass(frozen=True)
class ResponseWindow:
    """Frames before (baseline) and after (response) a stimulation, and the threshold.

    baseline_frames : frames ending at the stimulation frame (exclusive) used as baseline.
    delay_frames : frames from the stimulation frame (the first that can show a response)
        skipped before the response window.
    response_frames : frames in the response window.
    threshold : minimum rise of the window's peak over the baseline mean, dF/F.
    z : minimum rise in baseline standard deviations.
    confounded_weight : weight of a confounded stimulation in the posterior (0 discards it).
    """

    baseline_frames: int = 5
    delay_frames: int = 0
    response_frames: int = 3
    threshold: float = 0.2
    z: float = 3.0
    confounded_weight: float = 0.0

    def __post_init__(self):
        for name in ("baseline_frames", "response_frames"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ResponseWindow.{name}: must be >= 1 frame")
        if self.delay_frames < 0:
            raise ValueError("ResponseWindow.delay_frames: must be >= 0")
        if not 0.0 <= self.confounded_weight <= 1.0:
            raise ValueError("ResponseWindow.confounded_weight: must be in [0, 1]")

    @property
    def frames_after(self) -> int:
        """Frames after the stimulation frame needed before the outcome is known."""
        return self.delay_frames + self.response_frames - 1


@dataclass(frozen=True)
class Outcome:
    """One test's outcome: y (N,) uint8 (0 silent, 1 responded, 2 unobserved), flags, weight."""

    y: np.ndarray
    confounded: bool
    weight: float


def outcome(traces: np.ndarray, stim_row: int, targets, window: ResponseWindow,
            moving: np.ndarray | None = None, movers: np.ndarray | None = None) -> Outcome:
    """Outcome of the stimulation delivered at row ``stim_row`` of ``traces``.

    Parameters
    ----------
    traces : (F, N) float dF/F, rows are consecutive imaging frames.
    stim_row : row of the frame the stimulation landed in (the first that can respond).
    targets : (K,) stimulated neuron ids (marked unobserved).
    window : the response window and threshold.
    moving : (F,) bool decoded movement per row, or None when unknown (not confounded).
    movers : (N,) bool neurons that movement drives (``MoverMap``), or None. When given, a
        confounded stimulation keeps weight 1 with these neurons unobserved: the bout hides
        only their responses, the rest of the brain still answers the test.
    """
    traces = np.asarray(traces)
    if traces.ndim != 2:
        raise ValueError(f"traces: expected (frames, neurons), got shape {traces.shape}")
    b0 = stim_row - window.baseline_frames
    r0 = stim_row + window.delay_frames
    r1 = r0 + window.response_frames
    if b0 < 0 or r1 > traces.shape[0]:
        raise ValueError(f"stim_row={stim_row}: needs rows {b0}..{r1 - 1} of traces, which has "
                         f"{traces.shape[0]}; keep {window.baseline_frames} frames before and "
                         f"{window.frames_after} after the stimulation")
    base = traces[b0:stim_row]
    rise = traces[r0:r1].max(axis=0) - base.mean(axis=0)
    crit = np.maximum(window.threshold, window.z * base.std(axis=0))
    y = np.where(rise > crit, RESPONDED, SILENT).astype(np.uint8)
    y[~np.isfinite(rise)] = UNOBSERVED
    y[np.asarray(targets, dtype=np.int64)] = UNOBSERVED
    confounded = False
    if moving is not None:
        moving = np.asarray(moving, dtype=bool)
        if moving.shape != (traces.shape[0],):
            raise ValueError(f"moving: shape {moving.shape}, expected ({traces.shape[0]},)")
        confounded = bool(moving[b0:r1].any())
    weight = 1.0
    if confounded and movers is not None:
        y[np.asarray(movers, dtype=bool)] = UNOBSERVED
    elif confounded:
        weight = window.confounded_weight
    return Outcome(y=y, confounded=confounded, weight=weight)


class MoverMap:
    """Which neurons movement drives, learned online from the behaviour labels.

    For every labelled frame t (t - 1 and t + 1 stored), each neuron's rise as the response
    detector reads it, max(dF/F[t], dF/F[t + 1]) - dF/F[t - 1], is averaged separately over
    frames with and without movement. A neuron whose mean rise with movement exceeds its mean
    without by ``margin`` (dF/F) is a mover. Until ``min_frames`` of each kind were seen,
    every neuron counts as a mover (a confounded test then tells nothing).
    """

    def __init__(self, n: int, margin: float = 0.1, min_frames: int = 5):
        self.sums = np.zeros((2, n))  # quiet, moving
        self.counts = np.zeros(2, np.int64)
        self.margin = float(margin)
        self.min_frames = int(min_frames)
        self.done = -1  # newest frame t folded in

    def fold(self, collector: "ResponseCollector", newest: int) -> None:
        """Fold in every frame t < ``newest`` whose label and neighbours are stored."""
        for t in range(max(self.done + 1, newest - collector.cap + 2), newest):
            rows = np.array([t - 1, t, t + 1])
            s = rows % collector.cap
            if rows[0] < 0 or np.any(collector.frame[s] != rows) \
                    or collector.moving_frame[s[1]] != t:
                continue
            rise = np.maximum(collector.dff[s[1]], collector.dff[s[2]]) - collector.dff[s[0]]
            if np.all(np.isfinite(rise)):
                kind = int(collector.moving[s[1]])
                self.sums[kind] += rise
                self.counts[kind] += 1
        self.done = max(self.done, newest - 1)

    def movers(self) -> np.ndarray:
        """(N,) bool."""
        if self.counts.min() < self.min_frames:
            return np.ones(self.sums.shape[1], bool)
        quiet, moving = self.sums / self.counts[:, None]
        return moving - quiet > self.margin


class ResponseCollector:
    """Streaming form of ``outcome``: feed frames, register stimulations, collect outcomes.

    Keeps a ring of the last frames' dF/F by frame index, and a second ring of movement
    reports (decoded or observed) keyed by the frame they describe, so a report arriving
    before or after its frame's traces is kept either way.

    When an outcome is emitted: once traces through ``f + window.frames_after`` have arrived
    and, while ``wait_movement`` is set (the node sets it once any movement source has
    reported), once movement is known through that frame too: movement reports come after
    their frame's traces, so without the wait a bout in the last response frame would never
    flag the stimulation. A movement source that falls ``movement_timeout_frames`` behind the
    traces does not stall mapping: the outcome is emitted then, and a window frame with no
    movement report counts as moving (confounded), since it cannot be shown quiet.
    """

    def __init__(self, n: int, window: ResponseWindow, capacity: int = 64,
                 movement_timeout_frames: int = 10):
        self.window = window
        self.cap = max(capacity, window.baseline_frames + window.frames_after
                       + movement_timeout_frames + 2)
        self.dff = np.full((self.cap, n), np.nan, dtype=np.float32)
        self.frame = np.full(self.cap, -1, dtype=np.int64)
        self.moving = np.zeros(self.cap, dtype=bool)
        self.moving_frame = np.full(self.cap, -1, dtype=np.int64)  # frame each flag is for
        self.pending: list[tuple[int, np.ndarray]] = []
        self.last_frame = -1
        self.movement_known = -1  # newest frame with any movement report
        self.wait_movement = False
        self.movement_timeout_frames = int(movement_timeout_frames)

    def add_frame(self, frame: int, dff: np.ndarray) -> None:
        """Store one imaging frame's dF/F (N,)."""
        s = frame % self.cap
        self.dff[s] = dff
        self.frame[s] = frame
        self.last_frame = max(self.last_frame, frame)

    def set_moving(self, frame: int, moving: bool) -> None:
        """Record a movement report for a frame (decoded or observed, before or after its
        traces). Any source that saw movement marks the frame moving."""
        s = frame % self.cap
        if self.moving_frame[s] != frame:
            self.moving_frame[s] = frame
            self.moving[s] = False
        self.moving[s] |= bool(moving)
        self.movement_known = max(self.movement_known, frame)

    def add_stim(self, frame: int, targets) -> None:
        """Register a stimulation that landed in imaging frame ``frame``."""
        self.pending.append((int(frame), np.asarray(targets, dtype=np.int32)))

    def ready(self, movers: np.ndarray | None = None) -> list[tuple[int, np.ndarray, Outcome]]:
        """Outcomes whose windows are complete: (stim frame, targets, Outcome); drops stale ones.
        ``movers``: see ``outcome``."""
        out, keep = [], []
        w = self.window
        for f, tg in self.pending:
            end = f + w.frames_after
            late = self.last_frame >= end + self.movement_timeout_frames
            if self.last_frame < end or (self.wait_movement and self.movement_known < end
                                         and not late):
                keep.append((f, tg))
                continue
            rows = np.arange(f - w.baseline_frames, end + 1)
            if rows[0] < 0 or np.any(self.frame[rows % self.cap] != rows):
                continue  # a frame of the window was lost or overwritten: no outcome
            s = rows % self.cap
            known = self.moving_frame[s] == rows
            moving = self.moving[s] & known
            if self.wait_movement:
                moving |= ~known  # no report for this frame: it cannot be shown quiet
            out.append((f, tg, outcome(self.dff[s], w.baseline_frames, tg, w, moving, movers)))
        self.pending = keep
        return out
