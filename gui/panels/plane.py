"""Imaging plane: one plane of cells as the microscope sees it, with targets and selection.

A plane is a z-slab of the neuron positions (``anatomy``, um); each cell is drawn as a disc
(its ROI) coloured by its latest dF/F ("live") or its mean over the last frames ("mean"),
under its ROI outline. When the microscope's own ``frame`` images come with their geometry
(meta "pixel_um" and "origin_um" = the (x, y) um of pixel (0, 0), "plane" its index), the
live or mean frame is drawn under the outlines instead. On top: the planned ensemble
(``stim.plan``, yellow crosses), the last fired one (``stim.fired``, cyan rings) and the
selected cells (magenta squares, numbered). Clicking a cell adds its trace to the activity
panel (``on_pick``). A plane selector lists the slabs with how many cells each holds.

Discs are binned once per anatomy and plane, so a redraw is one ``np.maximum.at`` over the
plane's cells, as in the anatomy panel.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QVBoxLayout, QWidget

from gui.panels import colour_bar, lookup_table, quantize, status_label, title_label
from rig.messages import ANATOMY, FRAME, STIM_FIRED, STIM_PLAN, TRACES

SLAB_UM = 20.0  # plane thickness
UM_PER_PX = 2.0
ROI_UM = 5.0  # drawn cell radius (a larval neuron's soma is ~6 um across: a little larger
# keeps its colour readable when a whole plane fits the panel)
PICK_UM = 10.0  # a click this close to a cell picks it
MEAN_FRAMES = 60


class PlanePanel(QWidget):
    """One imaging plane with ROIs, targets and the selected cells.

    Parameters
    ----------
    on_pick : callable, optional
        Called with a neuron id when a cell is clicked.
    vmax : float
        dF/F at full colour.
    """

    def __init__(self, on_pick=None, vmax: float = 1.0, parent=None):
        super().__init__(parent)
        self.on_pick = on_pick
        self.vmax = vmax
        self.n = 0
        self.plane = -1  # index into self.planes
        self.planes: list[np.ndarray] = []  # neuron ids per slab
        self.bounds: list[tuple[float, float]] = []  # z range per slab
        self.selected: list[int] = []
        self._anatomy_version = -1
        self._key = None
        self._pixels = np.zeros(0, np.int64)
        self._owner = np.zeros(0, np.int64)
        self._image = np.zeros((1, 1), np.uint8)
        self._rect = (0.0, 0.0, 1.0, 1.0)

        self.plane_box = QComboBox()
        self.plane_box.currentIndexChanged.connect(self.set_plane)
        self.show_box = QComboBox()
        self.show_box.addItems(("live", "mean"))
        self.show_box.currentTextChanged.connect(lambda _: self._force())
        self.info = status_label("waiting for anatomy (positions)", right=True)
        bar = QHBoxLayout()
        for widget in (title_label("Imaging plane"), self.plane_box, self.show_box):
            bar.addWidget(widget)
        bar.addWidget(self.info, 1)

        self.view = pg.GraphicsLayoutWidget()
        self.plot = self.view.addPlot(row=0, col=0)
        self.plot.setMenuEnabled(False)
        self.plot.setAspectLocked(True)
        self.plot.setLabel("left", "y (left-right), um")
        self.plot.setLabel("bottom", "x (rostral -> caudal), um")
        for side in ("left", "bottom"):
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        lut = lookup_table("inferno")
        lut[0] = (25, 25, 25)
        self.image.setLookupTable(lut)
        self.plot.addItem(self.image)
        self.frame_image = pg.ImageItem(axisOrder="row-major")
        self.frame_image.setVisible(False)
        self.plot.addItem(self.frame_image)
        self.outlines = pg.ScatterPlotItem(size=2 * ROI_UM, pxMode=False, brush=None,
                                           pen=pg.mkPen((110, 110, 110), width=1))
        self.planned = pg.ScatterPlotItem(size=12, symbol="x", brush=(255, 230, 0),
                                          pen=pg.mkPen((255, 230, 0), width=1))
        self.fired = pg.ScatterPlotItem(size=16, symbol="o", brush=None,
                                        pen=pg.mkPen((0, 220, 255), width=2))
        self.chosen = pg.ScatterPlotItem(size=14, symbol="s", brush=None,
                                         pen=pg.mkPen((255, 0, 255), width=2))
        for item in (self.outlines, self.planned, self.fired, self.chosen):
            self.plot.addItem(item)
        # ~1,000 outlines change only with the plane or the zoom: drawn once into a pixmap
        # (Qt's item cache) instead of path by path on every redraw of the cells under them.
        self.outlines.setCacheMode(pg.QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.labels = []
        self.bar = colour_bar(self.view.ci, 0, 1, "inferno", 0.0, vmax, "dF/F")
        self.view.scene().sigMouseClicked.connect(self._on_click)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.view)

    # -- choices -------------------------------------------------------------------------
    def set_plane(self, index: int) -> None:
        if not 0 <= index < len(self.planes) or index == self.plane:
            return
        self.plane = index
        if self.plane_box.currentIndex() != index:
            self.plane_box.setCurrentIndex(index)
        self._bin()
        self._force()

    def set_selected(self, neurons) -> None:
        self.selected = [int(i) for i in neurons]
        self._force()

    def pick_at(self, x_um: float, y_um: float) -> int | None:
        """The plane's cell nearest (x, y) um within ``PICK_UM``, added to the traces."""
        ids = self.planes[self.plane] if 0 <= self.plane < len(self.planes) else []
        if len(ids) == 0:
            return None
        xy = self._positions[ids, :2]
        d2 = (xy[:, 0] - x_um) ** 2 + (xy[:, 1] - y_um) ** 2
        best = int(np.argmin(d2))
        if d2[best] > PICK_UM ** 2:
            return None
        neuron = int(ids[best])
        if self.on_pick is not None:
            self.on_pick(neuron)
        return neuron

    def _on_click(self, event) -> None:
        if not self.plot.sceneBoundingRect().contains(event.scenePos()):
            return
        point = self.plot.vb.mapSceneToView(event.scenePos())
        self.pick_at(point.x(), point.y())

    def _force(self) -> None:
        self._key = None

    # -- geometry ------------------------------------------------------------------------
    def _slabs(self, positions: np.ndarray) -> None:
        z = positions[:, 2]
        edges = np.arange(np.floor(z.min() / SLAB_UM) * SLAB_UM, z.max() + SLAB_UM, SLAB_UM)
        self.planes, self.bounds = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            ids = np.flatnonzero((z >= lo) & (z < hi))
            if len(ids):
                self.planes.append(ids)
                self.bounds.append((float(lo), float(hi)))
        self.plane_box.blockSignals(True)
        self.plane_box.clear()
        self.plane_box.addItems([f"z {lo:.0f}-{hi:.0f} um ({len(ids)} cells)"
                                 for (lo, hi), ids in zip(self.bounds, self.planes)])
        # The fullest plane first: the one a person would image.
        self.plane = -1
        self.plane_box.blockSignals(False)
        self.set_plane(int(np.argmax([len(ids) for ids in self.planes])))

    def _bin(self) -> None:
        """Pixels of every cell's disc in this plane (once per plane)."""
        ids = self.planes[self.plane]
        xy = self._positions[:, :2]
        x0, y0 = xy[:, 0].min() - 2 * ROI_UM, xy[:, 1].min() - 2 * ROI_UM
        w = int(np.ceil((xy[:, 0].max() + 2 * ROI_UM - x0) / UM_PER_PX))
        h = int(np.ceil((xy[:, 1].max() + 2 * ROI_UM - y0) / UM_PER_PX))
        r = int(np.ceil(ROI_UM / UM_PER_PX))
        dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
        disc = (dx ** 2 + dy ** 2) <= (ROI_UM / UM_PER_PX) ** 2
        dy, dx = dy[disc], dx[disc]
        cols = np.floor((xy[ids, 0] - x0) / UM_PER_PX).astype(np.int64)[:, None] + dx
        rows = np.floor((xy[ids, 1] - y0) / UM_PER_PX).astype(np.int64)[:, None] + dy
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        self._pixels = (rows * w + cols)[inside]
        self._owner = np.broadcast_to(np.arange(len(ids))[:, None], rows.shape)[inside]
        self._image = np.zeros((h, w), np.uint8)
        self._rect = (float(x0), float(y0), w * UM_PER_PX, h * UM_PER_PX)
        self.outlines.setData(xy[ids, 0], xy[ids, 1])
        self.plot.setRange(pg.QtCore.QRectF(*self._rect), padding=0.02)
        self.plot.disableAutoRange()

    # -- drawing -------------------------------------------------------------------------
    def refresh(self, store) -> None:
        version = store.version(ANATOMY)
        if version != self._anatomy_version:
            positions = store.anatomy.get("positions") if store.anatomy else None
            if positions is None or len(positions) == 0:
                return
            self._anatomy_version = version
            self._positions = positions
            self.n = len(positions)
            self._slabs(positions)
        if self.plane < 0:
            return
        key = (store.version(TRACES), store.version(FRAME), store.version(STIM_PLAN),
               store.version(STIM_FIRED))
        if key == self._key:
            return
        self._key = key
        ids = self.planes[self.plane]
        mean = self.show_box.currentText() == "mean"
        note = self._draw_frame(store, mean)
        got = store.last_frames(TRACES, MEAN_FRAMES if mean else 1, cols=ids)
        self._image.fill(0)
        if got is not None and got[0].shape[1] == len(ids):
            values = got[0].mean(axis=0) if mean else got[0][-1]
            index = (1 + quantize(values, 0.0, self.vmax).astype(np.uint16) * 254 // 255)
            np.maximum.at(self._image.reshape(-1), self._pixels,
                          index.astype(np.uint8)[self._owner])
        else:
            note = note or "no traces for these neurons yet"
        self.image.setImage(self._image, autoLevels=False, levels=(0, 255))
        self.image.setRect(pg.QtCore.QRectF(*self._rect))
        self._draw_targets(store, ids)
        how = f"mean of the last {MEAN_FRAMES} frames" if mean else "live"
        shown = f"{len(ids)} cells, {how}; click a cell for its trace"
        self.info.setText(f"{shown}  ({note})" if note else shown)

    def _draw_frame(self, store, mean: bool) -> str:
        """The microscope's frame under the outlines, when it says where it lies."""
        with store.lock:
            kept = store.planes.get(self.plane) or (next(iter(store.planes.values()))
                                                    if len(store.planes) == 1 else None)
            image = None if kept is None else (kept["mean"] if mean else kept["latest"]).copy()
            meta = {} if kept is None else kept["meta"]
        geometry = "pixel_um" in meta and "origin_um" in meta
        self.frame_image.setVisible(image is not None and geometry)
        self.image.setOpacity(0.55 if image is not None and geometry else 1.0)
        if image is None or not geometry:
            return "" if image is None else "microscope frames carry no geometry: cells shown"
        lo, hi = np.percentile(image[::4, ::4], (1, 99.5))
        self.frame_image.setImage(image, autoLevels=False, levels=(float(lo), float(hi) + 1e-6))
        px = float(meta["pixel_um"])
        x0, y0 = (float(v) for v in meta["origin_um"])
        self.frame_image.setRect(pg.QtCore.QRectF(x0, y0, image.shape[1] * px,
                                                  image.shape[0] * px))
        self.frame_image.setZValue(-1)
        return ""

    def _draw_targets(self, store, ids: np.ndarray) -> None:
        in_plane = np.zeros(self.n, bool)
        in_plane[ids] = True
        xy = self._positions[:, :2]
        for topic, item in ((STIM_PLAN, self.planned), (STIM_FIRED, self.fired)):
            msg = store.get_latest(topic)
            targets = np.zeros(0, np.int64) if msg is None else \
                np.asarray(msg.arrays.get("targets", []), np.int64)
            targets = targets[(targets >= 0) & (targets < self.n)]
            targets = targets[in_plane[targets]]
            item.setData(xy[targets, 0], xy[targets, 1])
        chosen = [i for i in self.selected if 0 <= i < self.n and in_plane[i]]
        self.chosen.setData(xy[chosen, 0], xy[chosen, 1])
        while len(self.labels) < len(chosen):
            label = pg.TextItem(color=(255, 0, 255), anchor=(0, 1))
            self.plot.addItem(label)
            self.labels.append(label)
        for k, label in enumerate(self.labels):
            if k < len(chosen):
                label.setText(f"#{chosen[k]}")
                label.setPos(xy[chosen[k], 0] + ROI_UM, xy[chosen[k], 1] + ROI_UM)
            else:
                label.setText("")
