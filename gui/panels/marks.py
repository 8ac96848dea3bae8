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
        self._origin: int | None = None  # ns: x = 0 of the lines' own coordinates

    def _add(self, pen):
        # Marks span the plot's y range: they must not widen it (the range would grow
        # with every redraw). A bare curve: a PlotDataItem re-derives its data when moved.
        item = pg.PlotCurveItem(pen=pen, connect="pairs")
        self.plot.addItem(item, ignoreBounds=True)
        return item

    def update(self, store, t_ref_ns: int, span_s: float, y: tuple[float, float]) -> None:
        """Draw the marks within ``span_s`` before ``t_ref_ns`` over y range ``y``.

        The lines are drawn in seconds from a fixed origin and shifted to "before now" by
        moving the items (``setPos``): a new frame moves them, and their paths are rebuilt
        only when a mark comes or goes, or the span or y range changes.
        """
        stims_on, bouts_on, epochs_on = self.kinds
        with store.lock:
            marks = store.marks
            key = (span_s, y, marks.stims[-1] if stims_on and marks.stims else 0,
                   marks.epochs[-1][0] if epochs_on and marks.epochs else 0,
                   tuple(marks.bouts[-1]) if bouts_on and marks.bouts else ())
            rebuild = key != self._key
            stims = np.array(marks.stims, np.int64) if rebuild and stims_on else None
            bouts = np.array(marks.bouts, np.int64).reshape(-1, 2) if rebuild and bouts_on \
                else None
            epochs = _since(marks.epochs, t_ref_ns - int(span_s * 1e9)) if epochs_on else []
        if self._origin is None:
            self._origin = t_ref_ns
        if rebuild:
            self._key = key
            self._draw_lines(stims, bouts, epochs, t_ref_ns, span_s, y)
        shift = (self._origin - t_ref_ns) / 1e9
        for item in (self.stim_lines, self.bout_bars, self.epoch_lines):
            if item.pos().x() != shift:
                item.setPos(shift, 0)
        if self.labels:
            self._name_epochs(epochs, t_ref_ns, span_s, y[1])

    def _draw_lines(self, stims, bouts, epochs, t_ref_ns: int, span_s: float, y) -> None:
        """The marks after ``t_ref_ns - span_s``, in seconds from ``self._origin``."""
        lo, hi = y
        t0 = t_ref_ns - int(span_s * 1e9)  # marks older than this are off the plot for good

        def at(t):
            return (np.asarray(t, np.float64) - self._origin) / 1e9

        if stims is not None:
            # Ticks along the bottom, not lines across the data: at one stimulation every few
            # seconds, full-height lines would hide the curves.
            xs = at(stims[stims >= t0])
            tick = lo + self.tick * (hi - lo)
            self.stim_lines.setData(np.repeat(xs, 2), np.tile([lo, tick], len(xs)),
                                    connect="pairs")
        if bouts is not None:
            # An open bout runs past now (the plot ends at now): its bar grows as the plot
            # scrolls, with no redraw until it ends.
            ends = np.where(bouts[:, 1] == 0, t_ref_ns + int(span_s * 1e9), bouts[:, 1])
            keep = ends > t0
            b0, b1 = at(np.maximum(bouts[keep, 0], t0)), at(ends[keep])
            top = hi - 0.02 * (hi - lo)
            self.bout_bars.setData(np.column_stack([b0, b1]).ravel(),
                                   np.full(2 * keep.sum(), top), connect="pairs")
        if self.kinds[2]:
            xs = at([t for t, _ in epochs if t > t0])
            self.epoch_lines.setData(np.repeat(xs, 2), np.tile([lo, hi], len(xs)),
                                     connect="pairs")

    def _name_epochs(self, epochs, t_ref_ns: int, span_s: float, top: float) -> None:
        """Each epoch's name at its start (or the plot's left edge), where it fits."""
        x0 = -span_s
        starts = (np.array([t for t, _ in epochs], np.float64) - t_ref_ns) / 1e9
        shown = []
        for x, (_, name), x_next in zip(starts, epochs, np.append(starts[1:], 0.0)):
            x = max(x, x0)
            # Named only when its epoch is long enough for the name (1/8 of the span).
            if x_next >= x0 and x_next - x >= span_s / 8:
                shown.append((x, name))
        shown = shown[-len(self.labels):]
        for label, item in zip(self.labels, [None] * (len(self.labels) - len(shown)) + shown):
            text = "" if item is None else item[1]
            if label.toPlainText() != text:  # setText re-lays out HTML: only on a change
                label.setText(text)
            if item is not None:
                label.setPos(item[0], top)


def _since(epochs, t0_ns: int) -> list:
    """The epochs that started after ``t0_ns``, and the one running at ``t0_ns``."""
    recent = []
    for epoch in reversed(epochs):
        recent.append(epoch)
        if epoch[0] <= t0_ns:
            break
    return recent[::-1]
