"""Each stimulation's effect on the traces, computed as the frames after it arrive.

For a stimulation fired at imaging frame f the response of neuron i is the mean dF/F over
the ``post`` frames after f minus the mean over the ``pre`` frames up to f (the baseline).
Kept per stimulation: the targets' responses and the strongest responders among the other
neurons; over all stimulations: the stimulation-triggered average (STA) of the targets'
mean trace and of each stimulation's strongest responders' mean trace. The strongest
responders are picked after the fact, so their STA is biased upward by noise: the panel
says so. Windows are set in seconds and turned into frames by the traces' own frame
interval when the stimulation arrives.

Runs on the bus thread (inside ``LiveStore.add``, under its lock); costs one
``(pre + post + 1, N)`` slice per stimulation.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

PRE_S, POST_S = 2.0, 3.0  # baseline and response windows, s
MIN_FRAMES, MAX_FRAMES = 2, 90  # per window, whatever the frame rate
TOP = 10  # strongest responders kept per stimulation


@dataclass
class StimResponse:
    frame: int  # imaging frame the stimulation was fired at
    t_ns: int
    targets: np.ndarray  # (K,) neuron ids
    target_response: np.ndarray  # (K,) dF/F, post minus baseline
    top_ids: np.ndarray  # (TOP,) strongest responders among non-targets, strongest first
    top_response: np.ndarray  # (TOP,) dF/F


class Responses:
    """Pending stimulations, computed responses (newest last) and the running STA."""

    def __init__(self, keep: int = 500):
        self.items: deque[StimResponse] = deque(maxlen=keep)
        # (frame, t_ns, targets, pre, post) of each stimulation still waiting for its frames
        self.pending: list[tuple[int, int, np.ndarray, int, int]] = []
        self.window: tuple[int, int] = (0, 0)  # (pre, post) frames of the STA sums
        self.sta_targets = np.zeros(0)  # sums over stimulations, (pre + post + 1,)
        self.sta_top = np.zeros(0)
        self.sta_n = 0
        self.version = 0
        self.dt = 0.0  # s per frame when the windows were set

    def on_fired(self, targets: np.ndarray, frame: int, t_ns: int, ring, dt: float) -> None:
        """Queue a stimulation fired at ``frame``; ``dt`` is the traces' s per frame."""
        if ring is None or ring.total == 0 or not dt:
            return
        if frame < 0:  # no frame index: the newest frame stands in
            frame = int(ring.frames[(ring.total - 1) % ring.capacity])
        self.dt = dt
        pre, post = (int(np.clip(round(s / dt), MIN_FRAMES, MAX_FRAMES)) for s in (PRE_S, POST_S))
        self.pending.append((frame, t_ns, targets, pre, post))

    def on_frame(self, ring, frame: int) -> None:
        if not self.pending or frame < 0:
            return
        keep = []
        for item in self.pending:
            f0, _, _, pre, post = item
            if frame < f0 + post:
                keep.append(item)
            elif frame - f0 - post < ring.capacity // 2:  # else: its frames are gone
                self._compute(ring, *item)
        self.pending = keep

    def _compute(self, ring, f0, t_ns, targets, pre, post) -> None:
        rows, frames, _ = ring.last(min(len(ring), pre + post + 1 + 4 * post))
        window = np.arange(f0 - pre, f0 + post + 1)
        at = np.searchsorted(frames, window)
        at = np.clip(at, 0, len(frames) - 1)
        present = frames[at] == window
        if present[:pre + 1].sum() < 1 or present[pre + 1:].sum() < 1:
            return  # frames lost on the way: no baseline or no response to compare
        trace = np.full((len(window), rows.shape[1]), np.nan, np.float32)
        trace[present] = rows[at[present]]
        base = np.nanmean(trace[:pre + 1], axis=0)
        response = np.nanmean(trace[pre + 1:], axis=0) - base  # (N,)
        targets = targets[(targets >= 0) & (targets < len(response))]
        others = np.ones(len(response), bool)
        others[targets] = False
        candidates = np.flatnonzero(others & np.isfinite(response))
        k = min(TOP, len(candidates))
        top = candidates[np.argpartition(-response[candidates], k - 1)[:k]] if k else candidates
        top = top[np.argsort(-response[top])]
        self.items.append(StimResponse(f0, t_ns, targets, response[targets], top, response[top]))
        relative = trace - base  # (window, N)
        if self.window != (pre, post):
            self.window = (pre, post)
            self.sta_targets = np.zeros(len(window))
            self.sta_top = np.zeros(len(window))
            self.sta_n = 0
        if len(targets) and len(top) and present.all():
            self.sta_targets += relative[:, targets].mean(axis=1)
            self.sta_top += relative[:, top].mean(axis=1)
            self.sta_n += 1
        self.version += 1
