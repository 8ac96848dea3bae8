"""Stimulations, visual-stimulus epochs and bouts marked on a plot's time axis.

``TimeMarks`` adds three items to a pyqtgraph plot whose x axis is seconds before the newest
frame (0 = now): stimulations as ticks along the bottom, bouts as a bar along the top, and each
stimulus epoch's start as a dotted line with the stimulus's name (where the epoch is long
enough on screen for its name). Each set of lines is one
curve (``connect="pairs"``), and the name labels are a small reused pool, so marking costs
the same at 10 or 1,000 events. ``update`` redraws only when the marks or the view changed.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg

STIM_COLOUR = (0, 220, 255, 150)
BOUT_COLOUR = (255, 80, 80)
EPOCH_COLOUR = (170, 170, 170)
MAX_LABELS = 8  # epoch names drawn (the newest); older epochs keep their line


class TimeMarks:
    """Marks on ``plot``; ``stims``, ``bouts``, ``epochs`` pick which are drawn."""

    def __init__(self, plot, stims: bool = True, bouts: bool = True, epochs: bool = True,
                 tick: float = 0.1):
        self.plot = plot
        self.tick = tick  # stimulation ticks' length, a fraction of the y range
        self.kinds = (stims, bouts, epochs)
        self.stim_lines = self._add(pg.mkPen(STIM_COLOUR, width=1))
        self.bout_bars = self._add(pg.mkPen(BOUT_COLOUR, width=3))
        self.epoch_lines = self._add(pg.mkPen(EPOCH_COLOUR, width=1,
                                              style=pg.QtCore.Qt.PenStyle.DotLine))
        self.labels = []
        for _ in range(MAX_LABELS if epochs else 0):
            label = pg.TextItem(color=EPOCH_COLOUR, anchor=(0, 0))
            label.setZValue(5)
            plot.addItem(label, ignoreBounds=True)
            self.labels.append(label)
        self._key = None

    def _add(self, pen):
        # Marks span the plot's y range: they must not widen it (the range would grow
        # with every redraw).
        item = pg.PlotDataItem(pen=pen, connect="pairs")
        self.plot.addItem(item, ignoreBounds=True)
        return item

    def update(self, store, t_ref_ns: int, span_s: float, y: tuple[float, float]) -> None:
        """Draw the marks within ``span_s`` before ``t_ref_ns`` over y range ``y``."""
        with store.lock:
            marks = store.marks
            key = (t_ref_ns, span_s, y, len(marks.stims), len(marks.epochs), len(marks.bouts),
                   marks.bouts[-1][1] if marks.bouts else 0)
            if key == self._key:
                return
            stims = np.array(marks.stims, np.int64) if self.kinds[0] else np.zeros(0, np.int64)
            bouts = np.array(marks.bouts, np.int64).reshape(-1, 2) if self.kinds[1] else \
                np.zeros((0, 2), np.int64)
            epochs = list(marks.epochs) if self.kinds[2] else []
        self._key = key
        lo, hi = y
        x0 = -span_s

        def rel(t):
            return (np.asarray(t, np.float64) - t_ref_ns) / 1e9

        xs = rel(stims)
        xs = xs[(xs >= x0) & (xs <= 0)]
        # Ticks along the bottom, not lines across the data: at one stimulation every few
        # seconds, full-height lines would hide the curves.
        tick = lo + self.tick * (hi - lo)
        self.stim_lines.setData(np.repeat(xs, 2), np.tile([lo, tick], len(xs)),
                                connect="pairs")
        if len(bouts):
            ends = np.where(bouts[:, 1] == 0, t_ref_ns, bouts[:, 1])
            b0, b1 = np.clip(rel(bouts[:, 0]), x0, 0), np.clip(rel(ends), x0, 0)
            keep = b1 > b0
            top = hi - 0.02 * (hi - lo)
            self.bout_bars.setData(np.column_stack([b0[keep], b1[keep]]).ravel(),
                                   np.full(2 * keep.sum(), top), connect="pairs")
        else:
            self.bout_bars.setData([], [])
        starts = rel([t for t, _ in epochs]) if epochs else np.zeros(0)
        shown = []
        for x, (_, name), x_next in zip(starts, epochs, np.append(starts[1:], 0.0)):
            x = max(x, x0)
            # Named only when its epoch is long enough for the name (1/8 of the span).
            if x_next >= x0 and x_next - x >= span_s / 8:
                shown.append((x, name))
        inside = np.array([x for x, _ in shown if x > x0])
        self.epoch_lines.setData(np.repeat(inside, 2), np.tile([lo, hi], len(inside)),
                                 connect="pairs")
        shown = shown[-len(self.labels):] if self.labels else []
        for label, item in zip(self.labels, [None] * (len(self.labels) - len(shown)) + shown):
            text = "" if item is None else item[1]
            if label.toPlainText() != text:  # setText re-lays out HTML: only on a change
                label.setText(text)
            if item is not None:
                label.setPos(item[0], hi)
