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
from PyQt6.QtCore import QRect, QSize, Qt
from PyQt6.QtGui import QPainter
from PyQt6.QtWidgets import QLabel, QSizePolicy, QWidget

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
    label = QLabel(f"<b>{text}</b>")
    label.setObjectName(PANEL_TITLE)  # hidden in a dock, whose title bar says the same
    return label


PANEL_TITLE = "panel-title"


def legend_label(entries):
    """A legend as one line of coloured text in a Qt label: ``entries`` is (text, colour).

    Drawn by Qt outside the plot's scene, so it costs nothing per frame (a pyqtgraph
    LegendItem is repainted with its plot, about 2.5 ms per frame here).
    """
    spans = " &nbsp;".join(f"<span style='color:{c}'>&#9644;&nbsp;{t.replace(' ', '&nbsp;')}"
                           "</span>" for t, c in entries)
    label = QLabel(spans)
    label.setWordWrap(True)  # wraps between entries in a narrow panel, never widens it
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


def status_label(text: str = "", wrap: bool = False, right: bool = False):
    """A line for changing text that never widens the window (long text is clipped).

    Its width is set by the layout, not by its text: a status line that grows would
    otherwise push every column, and relayout the whole window, on each redraw.
    """
    line = StatusLine(wrap, right)
    line.setText(text)
    return line


class StatusLine(QWidget):
    """Plain text that repaints itself alone when it changes.

    A QLabel's ``setText`` re-lays out every layout from its own up to the window's (~1 ms
    in this window), which a status changing every frame would pay 30 times a second.
    Wrapped text grows when it needs another line and keeps that height (until the width
    changes): a line flipping between one and two lines would resize, and so redraw, the
    plots beside it at each change.
    """

    def __init__(self, wrap: bool = False, right: bool = False, parent=None):
        super().__init__(parent)
        self._text = ""
        self._wrap = wrap
        self._kept = 0  # px: the most height the wrapped text needed at this width
        self._flags = int((Qt.AlignmentFlag.AlignRight if right else Qt.AlignmentFlag.AlignLeft)
                          | Qt.AlignmentFlag.AlignVCenter) | \
            (int(Qt.TextFlag.TextWordWrap) if wrap else 0)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(40)
        # It paints its whole rectangle, so Qt need not repaint the dock beneath it first.
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        text = str(text)
        if text == self._text:
            return
        self._text = text
        if self._wrap and self._text_height(self.width()) > self._kept:
            self._kept = self._text_height(self.width())
            if self.minimumHeight() != self.maximumHeight():
                self.updateGeometry()
        self.update()

    def resizeEvent(self, event) -> None:
        if event.size().width() != event.oldSize().width():
            self._kept = self._text_height(event.size().width())
        super().resizeEvent(event)

    def sizeHint(self) -> QSize:
        return QSize(200, self.heightForWidth(self.width()))

    def minimumSizeHint(self) -> QSize:
        return QSize(40, self.fontMetrics().height())

    def hasHeightForWidth(self) -> bool:
        return self._wrap

    def heightForWidth(self, width: int) -> int:
        return max(self._text_height(width), self._kept)

    def _text_height(self, width: int) -> int:
        metrics = self.fontMetrics()
        if not self._wrap or not self._text:
            return metrics.height()
        box = QRect(0, 0, max(width, 40), 1 << 16)
        return metrics.boundingRect(box, self._flags, self._text).height()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(self.backgroundRole()))
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(self.rect(), self._flags, self._text)


def line(plot, pen, **options):
    """A plain curve on ``plot`` (a PlotItem or ViewBox), for data redrawn every frame.

    ``plot.plot()`` makes a PlotDataItem, whose ``setData`` costs ~0.1 ms more (0.4 ms
    with symbols) for the downsampling, clipping and symbols it offers; a curve that needs
    none of them is a bare PlotCurveItem.
    """
    item = pg.PlotCurveItem(pen=pen, **options)
    plot.addItem(item)
    return item


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
                # Disabling still applies the prefix pyqtgraph computes for the range shown
                # now (an empty plot's +-0.7 would read x1000 for good): plain values.
                item.autoSIPrefixScale, item.labelUnitPrefix = 1.0, ""
                item.setCacheMode(item.CacheMode.DeviceCoordinateCache)
