"""Activity: a scrolling heatmap of dF/F for every neuron, and a few chosen traces.

The heatmap is one uint8 image (neurons x frames, newest frame on the right) drawn through
a 256-colour lookup table, pyqtgraph's indexed fast path; each redraw quantizes only the
frames that arrived since the last one and shifts the image by that many columns. Past
``MAX_ROWS`` neurons, blocks of neighbouring rows are drawn as their maximum (a screen
shows no more rows, and a 10,000-row image costs ten times as much to convert and paint);
the image keeps neuron coordinates, so a click still picks one neuron. Rows can
be ordered by neuron index, region, decoder salience or recent activity. Clicking a row
(or a cell in the imaging-plane panel) adds that neuron to the traces below (all of them one
curve, separated by NaN gaps, each labelled with its neuron). Stimulations, stimulus epochs
and bouts are marked on the time axis (``gui.panels.marks``).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import (QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit,
                             QVBoxLayout, QWidget)

from gui.panels import (SteadyRange, colour_bar, line, lookup_table, quantize,
                        status_label, title_label)
from gui.panels.marks import TimeMarks
from gui.store import frame_interval
from rig.messages import ANATOMY, SALIENCE, TRACES

SORTS = ("index", "region", "salience", "activity")


class ActivityPanel(QWidget):
    """Raster of dF/F (rows: neurons, columns: the last ``window`` frames) plus traces.

    Parameters
    ----------
    window : int
        Imaging frames shown (at 30 Hz, 300 frames are 10 s; at 2 Hz, 2.5 min).
    vmax : float
        dF/F drawn at full colour; the scale starts at ``vmin``.
    """

    MAX_TRACES = 8
    MAX_ROWS = 1000  # rows drawn at most; more neurons are max-pooled in blocks

    def __init__(self, window: int = 300, vmin: float = -0.5, vmax: float = 3.0, parent=None):
        super().__init__(parent)
        self.window = window
        self.vmin, self.vmax = vmin, vmax
        self.n = 0
        self._seen = 0
        self._img = np.zeros((0, window), np.uint8)  # (rows, window) display order, pooled
        self._order = np.zeros(0, np.int64)  # display row -> neuron id
        self._sort = "index"
        self._need_rebuild = False
        self._sort_version = -1  # version of the data the order was built from (region, salience)
        self._dt = 0.0  # frame interval estimate, s
        self._t_last = np.zeros(0, np.int64)  # acquisition time of the newest frame drawn
        self._step = 1  # neurons per drawn row
        self.selected: list[int] = []
        self._spacing: tuple[float, list] = (1.0, [])  # trace offset, and for which neurons
        self.sort_note = ""
        self.selection_changed = None  # called with the selected neurons when they change

        self.sort_box = QComboBox()
        self.sort_box.addItems(SORTS)
        self.sort_box.currentTextChanged.connect(self.set_sort)
        self.vmax_box = QDoubleSpinBox()
        self.vmax_box.setRange(0.05, 100.0)
        self.vmax_box.setSingleStep(0.5)
        self.vmax_box.setValue(vmax)
        self.vmax_box.setPrefix("max dF/F ")
        self.vmax_box.valueChanged.connect(self._on_vmax)
        self.pick = QLineEdit()
        self.pick.setPlaceholderText("neurons, e.g. 3, 17, 250 (or click rows)")
        self.pick.editingFinished.connect(self._on_pick)
        self.info = status_label("waiting for traces", right=True)

        bar = QHBoxLayout()
        for widget in (title_label("Activity (dF/F)"), QLabel("sort"), self.sort_box,
                       self.vmax_box, self.pick):
            bar.addWidget(widget)
        bar.addWidget(self.info, 1)  # takes the rest of the row; clipped, never widening

        self.view = pg.GraphicsLayoutWidget()
        self.heat_plot = self.view.addPlot(row=0, col=0)
        self.heat_plot.setMenuEnabled(False)
        self.heat_plot.setLabel("left", "neuron (display order)")
        self.heat_plot.invertY(True)
        # A fixed view range: auto-ranging re-measures the image and regenerates the axes on
        # every frame; the range changes only with N or the frame interval (see _draw).
        self.heat_plot.disableAutoRange()
        self._range = (0, 0.0)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(lookup_table("inferno"))
        self.heat_plot.addItem(self.image)
        self.colour_bar = colour_bar(self.view.ci, 0, 1, "inferno", vmin, vmax, "dF/F")
        self.view.ci.layout.setRowStretchFactor(0, 3)
        self.trace_plot = self.view.addPlot(row=1, col=0)
        self.trace_plot.setMenuEnabled(False)
        self.trace_plot.setLabel("bottom", "time before now (s)")
        self.trace_plot.setLabel("left", "neuron (traces offset)")
        self.trace_plot.setXLink(self.heat_plot)
        self.trace_curve = line(self.trace_plot, pg.mkPen("c", width=1), connect="finite")
        self.stim_marks = TimeMarks(self.heat_plot, bouts=False, epochs=False, tick=0.04)
        self.trace_range = SteadyRange(self.trace_plot)
        self.trace_marks = TimeMarks(self.trace_plot, epochs=False)  # named in Behaviour
        self.heat_plot.scene().sigMouseClicked.connect(self._on_click)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.view)

    # -- controls ------------------------------------------------------------------------
    def set_sort(self, name: str) -> None:
        if name not in SORTS:
            raise ValueError(f"sort {name!r}: choose one of {SORTS}")
        self._sort = name
        if self.sort_box.currentText() != name:
            self.sort_box.setCurrentText(name)
        self._need_rebuild = True

    def set_selected(self, neurons) -> None:
        self.selected = [int(i) for i in neurons][: self.MAX_TRACES]
        self.pick.setText(", ".join(map(str, self.selected)))
        if self.selection_changed is not None:
            self.selection_changed(list(self.selected))

    def add_selected(self, neuron: int) -> None:
        """Add ``neuron``'s trace (the oldest one shown goes when there are too many)."""
        chosen = [i for i in self.selected if i != neuron] + [int(neuron)]
        self.set_selected(chosen[-self.MAX_TRACES:])

    def _on_vmax(self, value: float) -> None:
        self.vmax = float(value)
        self.colour_bar.setLevels((self.vmin, self.vmax))
        self._need_rebuild = True

    def _on_pick(self) -> None:
        try:
            ids = [int(t) for t in self.pick.text().replace(",", " ").split()]
        except ValueError:
            self.info.setText("neurons: whole numbers separated by commas")
            return
        self.set_selected([i for i in ids if 0 <= i < max(self.n, 1)])

    def _on_click(self, event) -> None:
        if self.n == 0 or not self.heat_plot.sceneBoundingRect().contains(event.scenePos()):
            return
        point = self.heat_plot.vb.mapSceneToView(event.scenePos())
        row = int(point.y())
        if 0 <= row < self.n:
            self.add_selected(int(self._order[row]))

    # -- drawing -------------------------------------------------------------------------
    def _order_for(self, store) -> np.ndarray:
        n = self.n
        self.sort_note = ""
        self.selection_changed = None  # called with the selected neurons when they change
        if self._sort == "region":
            regions = store.anatomy.get("regions") if store.anatomy else None
            if regions is not None and len(regions) == n:
                return np.argsort(regions, kind="stable")
            self.sort_note = "no regions yet"
        elif self._sort == "salience":
            salience = store.salience
            if salience is not None and len(salience) == n:
                return np.argsort(-np.abs(salience), kind="stable")
            self.sort_note = "no salience yet"
        elif self._sort == "activity":
            recent = store.last_frames(TRACES, self.window)
            if recent is not None and recent[0].shape[1] == n:
                return np.argsort(-np.var(recent[0], axis=0), kind="stable")
        return np.arange(n)

    def _region_ticks(self, store) -> list:
        regions = store.anatomy.get("regions") if store.anatomy else None
        names = store.anatomy.get("region_names", []) if store.anatomy else []
        if self._sort != "region" or regions is None or len(regions) != self.n:
            return []
        ordered = regions[self._order]
        ticks = []
        for code in np.unique(ordered):
            rows = np.flatnonzero(ordered == code)
            name = names[code] if 0 <= code < len(names) else str(code)
            ticks.append((float(rows.mean()), name))
        return ticks

    def _rebuild(self, store) -> None:
        """Redo the whole image from the store (new N, new order or new colour scale)."""
        self._order = self._order_for(store)
        self._step = -(-self.n // self.MAX_ROWS)  # neurons per drawn row
        self._img = np.zeros((-(-self.n // self._step), self.window), np.uint8)
        recent = store.last_frames(TRACES, self.window)
        if recent is not None and recent[0].shape[1] == self.n:
            rows = recent[0]
            self._img[:, self.window - len(rows):] = self._columns(rows)
        ticks = self._region_ticks(store)
        self.heat_plot.getAxis("left").setTicks([ticks] if ticks else None)
        self._need_rebuild = False

    def _columns(self, rows: np.ndarray) -> np.ndarray:
        """(frames, N) dF/F -> (drawn rows, frames) uint8 in display order, max-pooled."""
        ordered = quantize(rows[:, self._order].T, self.vmin, self.vmax)  # (N, frames)
        if self._step == 1:
            return ordered
        pad = (-self.n) % self._step
        if pad:
            ordered = np.concatenate([ordered, np.zeros((pad, ordered.shape[1]), np.uint8)])
        return ordered.reshape(-1, self._step, ordered.shape[1]).max(axis=1)

    def refresh(self, store) -> None:
        got = store.frames_since(TRACES, self._seen)
        if got is None:
            return
        rows, frames, t_ns, total = got
        if len(t_ns):
            self._t_last = t_ns[-1:]
        # Sorting by region or salience applies when that data arrives or changes, even if
        # the sort was chosen before it came.
        source = {"region": ANATOMY, "salience": SALIENCE}.get(self._sort)
        sort_version = store.version(source) if source else -1
        if sort_version != self._sort_version:
            self._sort_version = sort_version
            self._need_rebuild = True
        if rows.shape[0] == 0 and not self._need_rebuild:
            return
        self._seen = total
        with store.lock:
            self._dt = frame_interval(store.traces) or self._dt
        if rows.shape[0] and rows.shape[1] != self.n:
            self.n = rows.shape[1]
            self.set_selected([i for i in self.selected if i < self.n] or
                              list(range(min(4, self.n))))
            self._need_rebuild = True
        if self._need_rebuild:
            self._rebuild(store)
        else:
            k = min(rows.shape[0], self.window)
            if k:
                # Scroll by k columns, then write the new frames quantized in display order.
                self._img[:, :-k] = self._img[:, k:]
                self._img[:, -k:] = self._columns(rows[-k:])
        self._draw(store, frames)

    def _draw(self, store, frames) -> None:
        dt = self._dt or 1.0
        width_s = self.window * dt
        self.image.setImage(self._img, autoLevels=False, levels=(0, 255))
        self.image.setRect(pg.QtCore.QRectF(-width_s, 0, width_s, self.n))
        if self._range[0] != self.n or abs(self._range[1] - width_s) > 0.02 * width_s:
            self._range = (self.n, width_s)
            self.heat_plot.setRange(xRange=(-width_s, 0), yRange=(0, self.n), padding=0)
        self._draw_traces(store, dt)
        if len(self._t_last):
            t_ref = int(self._t_last[-1])
            shown_s = self._range[1]  # the span on the axis: steadier than the frame interval
            self.stim_marks.update(store, t_ref, shown_s, (0, self.n))
            y = self.trace_plot.getViewBox().viewRange()[1]
            self.trace_marks.update(store, t_ref, shown_s, (float(y[0]), float(y[1])))
        latest = int(frames[-1]) if len(frames) else -1
        rate = f"{1 / self._dt:.3g} frames/s" if self._dt else "measuring the frame rate"
        note = f"  ({self.sort_note})" if self.sort_note else ""
        self.info.setText(f"{self.n} neurons  frame {latest}  {rate}{note}")

    def _draw_traces(self, store, dt: float) -> None:
        if not self.selected:
            self.trace_curve.setData([], [])
            return
        recent = store.last_frames(TRACES, self.window, cols=self.selected)
        if recent is None:
            return
        values = recent[0]  # (frames, k)
        n_frames, k = values.shape
        x = (np.arange(n_frames) - n_frames + 1) * dt
        wanted = max(float(np.nanmax(np.abs(values))) if values.size else 1.0, 1e-3) * 1.2
        spacing, ticks_for = self._spacing
        if not 0.8 * spacing <= wanted <= 1.25 * spacing:
            spacing = wanted  # change the offsets only on a big change: steady axes are cheap
        y = np.full((k, n_frames + 1), np.nan, np.float32)  # a NaN ends each trace
        y[:, :n_frames] = values.T + (np.arange(k) * spacing)[:, None]
        xs = np.tile(np.append(x, x[-1] if n_frames else 0.0), k)
        self.trace_curve.setData(xs, y.ravel(), connect="finite")
        self.trace_range.fit(y.ravel())
        if (spacing, self.selected) != (self._spacing[0], ticks_for):
            self.trace_plot.getAxis("left").setTicks(
                [[(i * spacing, f"#{n}") for i, n in enumerate(self.selected)]])
            self.trace_plot.setLabel("left", f"neuron (traces {spacing:.2g} dF/F apart)")
        self._spacing = (spacing, list(self.selected))
