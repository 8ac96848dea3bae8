"""Dashboard panels: one class per file, each a ``QWidget`` with ``refresh(store)``.

The main window calls ``refresh`` on a screen-rate timer; a panel reads the newest data
from the ``gui.store.LiveStore`` and redraws only what changed (it keeps the store's
version or row count it last drew). Panels never touch the bus and send control only
through the ``send`` callable they are given.

pyqtgraph options are set here once for every panel: numpy's (row, column) image order
and no antialiasing (thin, fast lines: pen width > 1 and antialiasing are the slow paths).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background="k",
                    foreground="w")


def lookup_table(name: str = "inferno") -> np.ndarray:
    """A 256-entry colour table; uint8 images with it take pyqtgraph's indexed fast path."""
    return pg.colormap.get(name).getLookupTable(nPts=256)


def quantize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``values`` linearly from [lo, hi] onto 0..255 (uint8), clipping; NaN -> 0.

    Fixed levels: a live image never auto-levels (that subsamples and rescales every frame,
    so colours would drift while the data do not).
    """
    scale = 255.0 / max(hi - lo, 1e-12)
    scaled = (np.asarray(values, np.float32) - np.float32(lo)) * np.float32(scale)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def title_label(text: str):
    from PyQt6.QtWidgets import QLabel

    label = QLabel(f"<b>{text}</b>")
    label.setObjectName(PANEL_TITLE)  # hidden in a dock, whose title bar says the same
    return label


PANEL_TITLE = "panel-title"


def legend_label(entries):
    """A legend as one line of coloured text in a Qt label: ``entries`` is (text, colour).

    Drawn by Qt outside the plot's scene, so it costs nothing per frame (a pyqtgraph
    LegendItem is repainted with its plot, about 2.5 ms per frame here).
    """
    from PyQt6.QtWidgets import QLabel

    from PyQt6.QtWidgets import QSizePolicy

    spans = " &nbsp;".join(f"<span style='color:{c}'>&#9644;&nbsp;{t.replace(' ', '&nbsp;')}"
                           "</span>" for t, c in entries)
    label = QLabel(spans)
    label.setWordWrap(True)  # wraps between entries in a narrow panel, never widens it
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


def status_label(text: str = "", wrap: bool = False, right: bool = False):
    """A label for changing text that never widens the window (long text is clipped).

    Its width is set by the layout, not by its text: a status line that grows would
    otherwise push every column, and relayout the whole window, on each redraw.
    """
    from PyQt6.QtCore import Qt
    from PyQt6.QtWidgets import QLabel, QSizePolicy

    label = QLabel(text)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(40)
    label.setWordWrap(wrap)
    if right:  # a status at the right end of a panel's title bar
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return label


def colour_bar(layout, row: int, col: int, cmap: str, lo: float, hi: float, label: str,
               rowspan: int = 1):
    """A static colour bar (``lo``..``hi`` in ``cmap``) beside a plot in a GraphicsLayout.

    Not linked to the image: the panels draw fixed-level uint8 images, so the bar only
    changes when a panel's scale does (``bar.setLevels``), never per frame.
    """
    bar = pg.ColorBarItem(values=(lo, hi), colorMap=pg.colormap.get(cmap), interactive=False,
                          width=12, label=label)
    layout.addItem(bar, row=row, col=col, rowspan=rowspan)
    return bar


class SteadyRange:
    """A y range that follows the data but moves only on a large change.

    Auto-ranging resets a plot's range, and so regenerates its axis and repaints it, on
    every redraw of a live curve; this keeps the range until the data leave it or shrink to
    under half of it, then fits them with a margin.
    """

    def __init__(self, plot, minimum: float = 1e-3):
        self.plot = plot
        self.minimum = minimum
        self.range = (0.0, 0.0)
        plot.enableAutoRange(y=False)

    def fit(self, *arrays) -> None:
        values = [np.asarray(a, np.float64) for a in arrays if a is not None and len(a)]
        values = [v[np.isfinite(v)] for v in values]
        values = [v for v in values if v.size]
        if not values:
            return
        lo = min(float(v.min()) for v in values)
        hi = max(float(v.max()) for v in values)
        shown_lo, shown_hi = self.range
        inside = shown_lo <= lo and hi <= shown_hi
        if inside and (hi - lo) > 0.5 * (shown_hi - shown_lo):
            return
        margin = max(0.1 * (hi - lo), self.minimum)
        self.range = (lo - margin, hi + margin)
        self.plot.setYRange(*self.range, padding=0)


def plain_axes(widget) -> None:
    """Turn off SI-prefix scaling on every plot axis in ``widget``.

    Units are written into the labels ("time before now (s)"), so a prefix would only
    mislead ("mdeg", "ms"); and an axis that may rescale re-lays out its label's HTML on
    every range change, a cost paid by each live plot on each redraw.
    """
    for view in widget.findChildren(pg.GraphicsView):
        for item in view.scene().items():
            if isinstance(item, pg.AxisItem):
                item.enableAutoSIPrefix(False)
