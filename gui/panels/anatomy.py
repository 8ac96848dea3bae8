"""Anatomy: neuron positions seen from above and from the side, coloured by a chosen value.

Each view is one uint8 image: every neuron is drawn as a 3 x 3 pixel block (pixels of
``um_per_px``; a single 4 um pixel is a speck whose colour cannot be read) and a pixel
shows the largest value of its neurons (so an active neuron is never averaged away by quiet
neighbours). Blocks are precomputed when positions arrive; a redraw sorts the N values and
writes them in rising order, so the largest lands last: cheap at 10,000 neurons where a
scatter plot with per-point brushes is not. The current stimulation ensemble (latest
``stim.plan``, or
``stim.fired``) is drawn on top as rings.

Colours: activity (latest dF/F), salience (decoder attribution, |value| normalised),
connectivity (expected outgoing connections from the planner's posterior), region.
Coordinates follow the simulator: x rostro-caudal, y left-right, z dorsal (um).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from gui.panels import colour_bar, lookup_table, quantize, status_label, title_label
from rig.messages import ANATOMY, POSTERIOR, SALIENCE, STIM_FIRED, STIM_PLAN, TRACES

MODES = ("activity", "salience", "connectivity", "region")
VIEWS = (("top", 0, 1, "y (left-right)"), ("side", 0, 2, "z (dorsal)"))
BLOCK = 1  # each neuron covers (2 BLOCK + 1)^2 pixels
BAR_LABELS = {"activity": "dF/F", "salience": "|salience| / max",
              "connectivity": "out-degree / max", "region": "region"}


class AnatomyPanel(QWidget):
    """Top (x, y) and side (x, z) views of the neurons, coloured by ``mode``.

    Parameters
    ----------
    um_per_px : float
        Bin size of the views in micrometres.
    vmax : float
        dF/F drawn at full colour in activity mode.
    """

    def __init__(self, um_per_px: float = 4.0, vmax: float = 2.0, parent=None):
        super().__init__(parent)
        self.um_per_px = um_per_px
        self.mode = "activity"
        self.n = 0
        self._anatomy_version = -1
        self._last = (-1, -1, -1)
        self._pixels: list[tuple[np.ndarray, tuple[int, int], tuple]] = []
        self.images: list[np.ndarray] = []
        self.ensemble = np.zeros(0, np.int64)
        self._fit = False

        self.mode_box = QComboBox()
        self.mode_box.addItems(MODES)
        self.mode_box.currentTextChanged.connect(self.set_mode)
        self.vmax_box = QDoubleSpinBox()
        self.vmax_box.setRange(0.05, 100)
        self.vmax_box.setValue(vmax)
        self.vmax_box.setPrefix("max dF/F ")
        self.vmax_box.valueChanged.connect(lambda _: self._set_lut())
        self.info = status_label("waiting for anatomy (positions)", right=True)
        bar = QHBoxLayout()
        for widget in (title_label("Anatomy"), QLabel("colour by"), self.mode_box,
                       self.vmax_box):
            bar.addWidget(widget)
        bar.addWidget(self.info, 1)  # takes the rest of the row; clipped, never widening

        self.view = pg.GraphicsLayoutWidget()
        self.plots, self.items, self.rings = [], [], []
        for row, (name, _, axis, label) in enumerate(VIEWS):
            plot = self.view.addPlot(row=row, col=0, title=name)
            plot.setMenuEnabled(False)
            plot.setAspectLocked(True)
            plot.setLabel("left", f"{label}, um")
            for side in ("left", "bottom"):  # um stays um (no "x0.001" scaling)
                plot.getAxis(side).enableAutoSIPrefix(False)
            # A larval brain's extent until positions arrive (then fitted to them).
            plot.setRange(xRange=(0, 900), yRange=(-300, 300) if axis == 1 else (0, 300))
            image = pg.ImageItem(axisOrder="row-major")
            plot.addItem(image)
            rings = pg.ScatterPlotItem(size=12, pen=pg.mkPen((0, 255, 120), width=2),
                                       brush=None, symbol="o")
            plot.addItem(rings)
            self.plots.append(plot)
            self.items.append(image)
            self.rings.append(rings)
        self.plots[-1].setLabel("bottom", "x (rostral -> caudal), um")
        self.bar = colour_bar(self.view.ci, 0, 1, "inferno", 0.0, vmax, "dF/F", rowspan=2)
        self.view.ci.layout.setRowStretchFactor(0, 5)
        self.view.ci.layout.setRowStretchFactor(1, 3)
        self._set_lut()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.view)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"colour mode {mode!r}: choose one of {MODES}")
        self.mode = mode
        if self.mode_box.currentText() != mode:
            self.mode_box.setCurrentText(mode)
        self._set_lut()
        self._force()

    def _set_lut(self) -> None:
        lut = lookup_table("CET-C6s" if self.mode == "region" else "inferno")
        lut[0] = (25, 25, 25)  # empty space reads as background, not as "value 0"
        for image in self.items:
            image.setLookupTable(lut)
        if hasattr(self, "bar"):
            self.bar.setColorMap(pg.colormap.get("CET-C6s" if self.mode == "region" else
                                                 "inferno"))
            top = self.vmax_box.value() if self.mode == "activity" else 1.0
            self.bar.setLevels((0.0, top))
            self.bar.axis.setLabel(BAR_LABELS[self.mode])
        self._force()

    def _force(self) -> None:
        self._last = (-1, -1, -1)

    def _bin(self, positions: np.ndarray) -> None:
        """Pixel index of every neuron in each view (computed once per anatomy)."""
        self._pixels = []
        for _, ax_x, ax_y, _ in VIEWS:
            x, y = positions[:, ax_x], positions[:, ax_y]
            x0, y0 = float(x.min()), float(y.min())
            x0, y0 = x0 - BLOCK * self.um_per_px, y0 - BLOCK * self.um_per_px
            cols = np.floor((x - x0) / self.um_per_px).astype(np.int64)
            rows = np.floor((y - y0) / self.um_per_px).astype(np.int64)
            shape = (int(rows.max()) + BLOCK + 1, int(cols.max()) + BLOCK + 1)
            rect = (x0, y0, shape[1] * self.um_per_px, shape[0] * self.um_per_px)
            offsets = np.arange(-BLOCK, BLOCK + 1)
            block = ((rows[:, None, None] + offsets[None, :, None]) * shape[1]
                     + cols[:, None, None] + offsets[None, None, :])
            self._pixels.append((block.reshape(len(x), -1), shape, rect))  # (N, 9)
        self.images = [np.zeros(shape, np.uint8) for _, shape, _ in self._pixels]

    def _values(self, store) -> tuple[np.ndarray | None, str]:
        """Per-neuron colour index 1..255 (0 is empty space) and a note."""
        n = self.n
        if self.mode == "activity":
            got = store.last_frames(TRACES, 1)
            if got is None or got[0].shape[1] != n:
                return None, "no traces for these neurons yet"
            return _colour_index(got[0][0], self.vmax_box.value()), ""
        if self.mode == "salience":
            sal = store.salience
            if sal is None or len(sal) != n:
                return None, "no salience yet (decoder)"
            top = float(np.nanmax(np.abs(sal))) or 1.0
            return _colour_index(np.abs(sal), top), ""
        if self.mode == "connectivity":
            post = store.get_latest(POSTERIOR)
            degree = None if post is None else post.arrays.get("out_degree")
            if degree is None or len(degree) != n:
                return None, "no posterior out_degree yet (planner)"
            top = float(np.nanmax(degree)) or 1.0
            return _colour_index(degree, top), ""
        regions = store.anatomy.get("regions")
        if regions is None:
            return None, "no regions"
        n_regions = max(int(regions.max()) + 1, 1)
        return (1 + regions.astype(np.int64) * 254 // n_regions).astype(np.uint8), ""

    def refresh(self, store) -> None:
        version = store.version(ANATOMY)
        if version != self._anatomy_version:
            positions = store.anatomy.get("positions") if store.anatomy else None
            if positions is None or len(positions) == 0:
                return
            self._anatomy_version = version
            self.n = len(positions)
            self._positions = positions
            self._bin(positions)
            self._fit = True
            self._force()
        if self.n == 0:
            return
        key = (store.version(TRACES) if self.mode == "activity" else
               store.version(SALIENCE) if self.mode == "salience" else
               store.version(POSTERIOR), store.version(STIM_PLAN),
               store.version(STIM_FIRED))
        if key == self._last:
            return
        self._last = key
        values, note = self._values(store)
        if values is not None:
            rising = np.argsort(values, kind="stable")  # the largest is written last
            colours = np.repeat(values[rising], self._pixels[0][0].shape[1])
        for image, item, (pixels, _, rect) in zip(self.images, self.items, self._pixels):
            image.fill(0)
            if values is not None:
                image.reshape(-1)[pixels[rising].ravel()] = colours
            item.setImage(image, autoLevels=False, levels=(0, 255))
            item.setRect(pg.QtCore.QRectF(*rect))  # after setImage: it scales by image size
        if self._fit:  # once per anatomy; then fixed (auto-range would re-fit every frame)
            self._fit = False
            for plot, (_, _, rect) in zip(self.plots, self._pixels):
                plot.setRange(pg.QtCore.QRectF(*rect), padding=0.02)
                plot.disableAutoRange()
        self._draw_ensemble(store)
        shown = f"{self.n} neurons, ensemble {len(self.ensemble)}"
        self.info.setText(f"{shown}  ({note})" if note else shown)

    def _draw_ensemble(self, store) -> None:
        msg = store.get_latest(STIM_PLAN) or store.get_latest(STIM_FIRED)
        targets = np.zeros(0, np.int64) if msg is None else np.asarray(msg.arrays["targets"])
        targets = targets[(targets >= 0) & (targets < self.n)].astype(np.int64)
        self.ensemble = targets
        for rings, (_, ax_x, ax_y, _) in zip(self.rings, VIEWS):
            points = self._positions[targets]
            rings.setData(points[:, ax_x], points[:, ax_y])


def _colour_index(values: np.ndarray, vmax: float) -> np.ndarray:
    """0..vmax onto colour indices 1..255 (uint8); index 0 is kept for empty space."""
    return (1 + quantize(values, 0.0, vmax).astype(np.uint16) * 254 // 255).astype(np.uint8)
