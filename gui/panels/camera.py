"""Camera: the live behaviour-camera frame with the traced tail, and the tail's history.

Top: the newest ``camera.frame`` image (fixed grey levels) with the traced centreline drawn
over it, and the tail base and resting tip as set. Bottom: the camera-rate cumulative tail
angle and vigour (deg) against time, with bouts marked as a bar along the top. A status
line counts lost traces, dropped and bad frames (``camera.stats``).

Setting the tail: press "Set tail", click the tail base, then the resting tail tip; the
panel emits ``geometryChanged(base_x, base_y, tip_x, tip_y)`` (pixels) for the dashboard to
send to the camera node. Feed it with ``update_frame(image, points)``, ``append(t, cum_angle,
vigour, bout)`` and ``set_stats(meta)``; the dashboard's timer calls ``redraw()``.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from gui.panels import SteadyRange, legend_label, line, status_label


class CameraPanel(QWidget):
    """Live camera frame with the traced tail, cumulative angle, vigour and bouts.

    Parameters
    ----------
    capacity : camera-rate samples kept for the traces (e.g. 10 s at 700 Hz).
    window_s : seconds of history drawn.
    """

    geometryChanged = pyqtSignal(float, float, float, float)  # base x, y, tip x, y (pixels)

    def __init__(self, capacity: int = 8192, window_s: float = 10.0, parent=None):
        super().__init__(parent)
        self.capacity = int(capacity)
        self.window_s = float(window_s)
        self._t = np.zeros(self.capacity, np.float64)  # s
        self._cum = np.zeros(self.capacity, np.float64)  # rad
        self._vig = np.zeros(self.capacity, np.float64)  # rad
        self._bout = np.zeros(self.capacity, bool)
        self._n = 0  # samples ever appended
        self._drawn = -1
        self._float_levels: tuple[float, float] | None = None  # set by the first float frame
        self._clicks: list[tuple[float, float]] | None = None  # None: not setting the tail
        self.base: tuple[float, float] | None = None
        self.tip: tuple[float, float] | None = None

        self.set_button = QPushButton("Set tail")
        self.set_button.setToolTip("then click the tail base, then the resting tail tip")
        self.set_button.clicked.connect(self.start_setting_tail)
        self.info = status_label("waiting for camera", right=True)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("<b>Camera</b>"))
        bar.addWidget(self.set_button)
        bar.addWidget(self.info, 1)

        self.view = pg.GraphicsLayoutWidget()
        self.image_box = self.view.addViewBox(row=0, col=0, lockAspect=True, invertY=True)
        self.image_box.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image_box.addItem(self.image)
        # The traced tail: a line through its points, and the points (two bare items: a
        # PlotDataItem with symbols costs ten times as much to update, 30 times a second).
        self.trace = line(self.image_box, pg.mkPen((255, 60, 60), width=1))
        self.trace_points = pg.ScatterPlotItem(size=3, symbol="o", pen=None,
                                               brush=(255, 60, 60))
        self.image_box.addItem(self.trace_points)
        self.marks = pg.ScatterPlotItem(size=8, pen=pg.mkPen("c"), brush=None)  # tail clicks
        self.image_box.addItem(self.marks)
        self.plot = self.view.addPlot(row=1, col=0)
        self.plot.setMenuEnabled(False)
        # Units written out: an SI prefix would turn a quiet tail into "mdeg".
        self.plot.setLabel("left", "angle (deg)")
        self.plot.setLabel("bottom", "time before now (s)")
        self.cum_curve = self.plot.plot(pen=pg.mkPen("w", width=1))
        self.vig_curve = self.plot.plot(pen=pg.mkPen((255, 170, 0), width=1))
        self.bout_curve = line(self.plot, pg.mkPen((0, 200, 255), width=1))
        for curve in (self.cum_curve, self.vig_curve):  # camera rate: one min/max per pixel
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
        self.plot.setXRange(-self.window_s, 0, padding=0.01)
        self.plot.enableAutoRange(x=False)
        self.y_range = SteadyRange(self.plot)
        self.view.ci.layout.setRowStretchFactor(0, 3)
        self.view.ci.layout.setRowStretchFactor(1, 2)
        self.view.scene().sigMouseClicked.connect(self._on_scene_click)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.view)
        # The legend beside the plot, not over its data.
        layout.addWidget(legend_label((("cumulative angle", "white"), ("vigour", "#ffaa00"),
                                       ("bout", "#00c8ff"))))

    # -- data in ---------------------------------------------------------------------------
    def update_frame(self, image: np.ndarray, points: np.ndarray | None = None,
                     levels: tuple[float, float] | None = None) -> None:
        """Show a camera frame (H, W) and the traced tail ``points`` (S + 1, 2) x, y pixels.

        Levels are fixed (0..255 for uint8, 0..65535 for uint16, a float image's first frame's
        range, or ``levels``): a live image never auto-levels.
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"CameraPanel.update_frame image: expected (H, W), got {image.shape}")
        if levels is None:
            if image.dtype == np.uint8:
                levels = (0, 255)
            elif image.dtype == np.uint16:
                levels = (0, 65535)
            else:
                if self._float_levels is None:
                    finite = image[np.isfinite(image)]
                    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0, 1)
                    self._float_levels = (lo, hi if hi > lo else lo + 1.0)
                levels = self._float_levels
        self.image.setImage(image, levels=levels, autoLevels=False)
        pts = np.asarray(points if points is not None else [], np.float64).reshape(-1, 2)
        x, y = pts[:, 0] + 0.5, pts[:, 1] + 0.5  # pixel centres
        self.trace.setData(x, y)
        self.trace_points.setData(x, y)

    def append(self, t, cum_angle, vigour, bout) -> None:
        """Add camera-rate samples: time (s), cumulative angle and vigour (rad), bout flag.

        Scalars or equal-length arrays; stored only (``redraw`` draws).
        """
        t = np.atleast_1d(np.asarray(t, np.float64))
        cols = [np.broadcast_to(np.atleast_1d(np.asarray(v, dt)), t.shape)
                for v, dt in ((cum_angle, np.float64), (vigour, np.float64), (bout, bool))]
        if len(t) > self.capacity:
            t, cols = t[-self.capacity:], [c[-self.capacity:] for c in cols]
        idx = (self._n + np.arange(len(t))) % self.capacity
        self._t[idx] = t
        self._cum[idx], self._vig[idx], self._bout[idx] = cols
        self._n += len(t)

    def set_stats(self, meta: dict) -> None:
        """Show ``camera.stats`` counters: lost traces, dropped and bad frames."""
        self.info.setText(
            f"frames {meta.get('frames', 0)}  lost {meta.get('lost', 0)}  "
            f"dropped {meta.get('dropped', 0)}  bad {meta.get('bad_frames', 0)}  "
            f"bouts {meta.get('bouts', 0)}" + ("  MOVING" if meta.get("moving") else ""))

    def history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The kept samples in time order: t (s), cum_angle, vigour (rad), bout."""
        n = min(self._n, self.capacity)
        order = (self._n - n + np.arange(n)) % self.capacity
        return self._t[order], self._cum[order], self._vig[order], self._bout[order]

    def redraw(self) -> None:
        """Draw the traces if new samples arrived (the dashboard's timer calls this)."""
        if self._n == self._drawn:
            return
        self._drawn = self._n
        t, cum, vig, bout = self.history()
        if len(t) == 0:
            return
        keep = t >= t[-1] - self.window_s
        x = t[keep] - t[-1]
        cum_deg = np.degrees(cum[keep])
        self.cum_curve.setData(x, cum_deg)
        self.vig_curve.setData(x, np.degrees(vig[keep]))
        finite = np.abs(cum_deg[np.isfinite(cum_deg)])  # lost frames are NaN
        top = max(10.0, float(finite.max())) if finite.size else 10.0
        bar = np.where(bout[keep], top * 1.05, np.nan)  # one curve, broken between bouts
        self.bout_curve.setData(x, bar, connect="finite")
        self.y_range.fit(cum_deg, np.degrees(vig[keep]), [top * 1.1, -top * 0.2])

    # -- setting the tail by two clicks -----------------------------------------------------
    def start_setting_tail(self) -> None:
        """Arm the next two clicks on the image: tail base, then resting tail tip."""
        self._clicks = []
        self.set_button.setText("click the tail base…")

    def click_at(self, x: float, y: float) -> None:
        """Take one click at image pixel (x, y) while setting the tail: the tracker's
        convention, where pixel (0, 0)'s centre is (0, 0) (drawn at view (0.5, 0.5))."""
        if self._clicks is None:
            return
        self._clicks.append((float(x), float(y)))
        if len(self._clicks) == 1:
            self.set_button.setText("click the tail tip…")
        else:
            (bx, by), (tx, ty) = self._clicks
            self._clicks = None
            self.set_button.setText("Set tail")
            if (bx, by) == (tx, ty):
                self.info.setText("base and tip must differ: press Set tail again")
                return
            self.base, self.tip = (bx, by), (tx, ty)
            self.marks.setData([bx + 0.5, tx + 0.5], [by + 0.5, ty + 0.5])  # as the trace
            self.geometryChanged.emit(bx, by, tx, ty)

    def _on_scene_click(self, event) -> None:
        if self._clicks is None:
            return
        pos = self.image_box.mapSceneToView(event.scenePos())
        # the view puts pixel (i, j) over [i, i + 1) x [j, j + 1); the tracker at its centre
        self.click_at(pos.x() - 0.5, pos.y() - 0.5)
