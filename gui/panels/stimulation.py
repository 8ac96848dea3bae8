"""Stimulation: what each stimulation did, on average, and how far the mapping has come.

Left: the latest stimulation's targets' responses (cyan bars) and the strongest responders
among the other neurons (orange bars), in dF/F (response window minus baseline, see
``gui.responses``), each bar labelled with its neuron. Middle: the stimulation-triggered
average of the targets' mean trace and of the strongest responders' (picked after the fact,
so biased upward by noise), against seconds from the stimulation. Right: mapping precision
and recall against the simulator's truth as stimulations accumulate (from the planner's
``posterior`` meta, where it scores itself), and the stimulations it expects still to need.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from gui.panels import SteadyRange, legend_label, line, status_label, title_label
from rig.messages import STIM_FIRED

TARGET_COLOUR = (0, 220, 255)
RESPONDER_COLOUR = (255, 150, 0)


class StimulationPanel(QWidget):
    """Per-stimulation responses, the stimulation-triggered average, mapping progress."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._key = None
        self._bars_shape = (-1, -1)  # (targets, responders) the bar axis is laid out for
        self._map_stims = 0.0  # right end of the mapping plot's x range
        self.info = status_label("waiting for stimulations (stim.fired)", wrap=True)
        self.progress_info = status_label("", wrap=True)
        bar = QHBoxLayout()
        bar.addWidget(title_label("Stimulation"))

        self.view = pg.GraphicsLayoutWidget()
        # Titles stay fixed (what changes per stimulation is in the line above): a new title
        # re-lays out the plots, and their axes are redrawn.
        self.bars_plot = self.view.addPlot(row=0, col=0, title="latest: response (dF/F)")
        self.bars_plot.setMenuEnabled(False)
        self.bars_plot.addLine(y=0, pen=pg.mkPen((90, 90, 90), width=1))
        self.target_bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=TARGET_COLOUR)
        self.responder_bars = pg.BarGraphItem(x=[], height=[], width=0.8,
                                              brush=RESPONDER_COLOUR)
        self.bars_plot.addItem(self.target_bars)
        self.bars_plot.addItem(self.responder_bars)
        self.sta_plot = self.view.addPlot(row=0, col=1, title="triggered average (dF/F)")
        self.sta_plot.setMenuEnabled(False)
        self.sta_plot.setLabel("bottom", "s from stimulation")
        self.sta_plot.addLine(x=0, pen=pg.mkPen((90, 90, 90), width=1))
        self.sta_targets = line(self.sta_plot, pg.mkPen(TARGET_COLOUR, width=1))
        self.sta_top = line(self.sta_plot, pg.mkPen(RESPONDER_COLOUR, width=1))
        self.map_plot = self.view.addPlot(row=0, col=2, title="mapping vs truth")
        self._narrow = False
        self.map_plot.setMenuEnabled(False)
        self.map_plot.setLabel("bottom", "stimulations")
        self.map_plot.setYRange(0, 1.02)
        self.map_plot.enableAutoRange(x=False)  # stepped as stimulations accumulate
        self.precision_curve = line(self.map_plot, pg.mkPen("y", width=1))
        self.recall_curve = line(self.map_plot, pg.mkPen("m", width=1))
        for plot in (self.bars_plot, self.sta_plot, self.map_plot):
            plot.getAxis("bottom").enableAutoSIPrefix(False)
            plot.getAxis("left").enableAutoSIPrefix(False)
            # A fixed width: one fitted to the tick labels ("1" vs "-0.15") changes as the
            # ranges do, and re-lays out, so redraws, all three plots with their axes.
            plot.getAxis("left").setWidth(40)
        self.bars_range = SteadyRange(self.bars_plot)
        self.sta_range = SteadyRange(self.sta_plot)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.info)
        layout.addWidget(self.view)
        layout.addWidget(legend_label((("targets", "#00dcff"),
                                       ("strongest responders", "#ff9600"),
                                       ("precision", "yellow"), ("recall", "magenta"))))
        layout.addWidget(self.progress_info)

    def resizeEvent(self, event) -> None:
        """Three plots side by side, or the latest response above the other two when the
        panel is narrow (a laptop screen), so that none is squeezed illegible."""
        super().resizeEvent(event)
        narrow = self.width() < 760
        if narrow == self._narrow:
            return
        self._narrow = narrow
        ci = self.view.ci
        for plot in (self.bars_plot, self.sta_plot, self.map_plot):
            ci.removeItem(plot)
        if narrow:
            ci.addItem(self.bars_plot, row=0, col=0, colspan=2)
            ci.addItem(self.sta_plot, row=1, col=0)
            ci.addItem(self.map_plot, row=1, col=1)
        else:
            for col, plot in enumerate((self.bars_plot, self.sta_plot, self.map_plot)):
                ci.addItem(plot, row=0, col=col)

    def refresh(self, store) -> None:
        with store.lock:
            responses = store.responses
            key = (store.generation, responses.version, len(store.posterior_history),
                   store.posterior_history[-1] if store.posterior_history else None,
                   store.counts.get(STIM_FIRED, 0))
            if key == self._key:
                return
            latest = responses.items[-1] if responses.items else None
            n_sta = responses.sta_n
            sta = (responses.sta_targets / max(n_sta, 1), responses.sta_top / max(n_sta, 1))
            pre, _ = responses.window
            dt = responses.dt
            history = np.array(store.posterior_history, float).reshape(-1, 4)
            fired = store.counts.get(STIM_FIRED, 0)
        self._key = key
        self._draw_latest(latest, fired, n_sta)
        if n_sta:
            x = (np.arange(len(sta[0])) - pre) * dt
            self.sta_targets.setData(x, sta[0])
            self.sta_top.setData(x, sta[1])
            self.sta_range.fit(sta[0], sta[1])
        self._draw_progress(history)

    def _draw_latest(self, latest, fired: int, n_sta: int) -> None:
        if latest is None:
            self.info.setText(f"{fired} fired; a response shows once the frames after it "
                              "arrive" if fired else
                              "no stimulation fired yet (is stimulation armed?)")
            return
        k = len(latest.targets)
        x_t = np.arange(k)
        x_r = np.arange(len(latest.top_ids)) + k + 1
        self.target_bars.setOpts(x=x_t, height=latest.target_response, width=0.8)
        self.responder_bars.setOpts(x=x_r, height=latest.top_response, width=0.8)
        self.bars_range.fit(latest.target_response, latest.top_response, [0.0])
        if self._bars_shape != (k, len(x_r)):  # the axis is redrawn only when it changes
            self._bars_shape = (k, len(x_r))
            # Bars are labelled in the line above (ids under narrow bars would overlap).
            self.bars_plot.getAxis("bottom").setTicks([[(k / 2 - 0.5, "targets"),
                                                        (k + 1 + len(x_r) / 2 - 0.5,
                                                         "strongest others")]])
            self.bars_plot.setXRange(-1, k + len(x_r) + 1, padding=0)
        best = ", ".join(f"#{i} {r:+.2f}" for i, r in zip(latest.top_ids[:4],
                                                        latest.top_response[:4]))
        mean = float(np.nanmean(latest.target_response)) if k else float("nan")
        self.info.setText(f"{fired} fired; latest: {k} targets, mean {mean:+.2f} dF/F; "
                          f"strongest {best} (at frame {latest.frame}; triggered average "
                          f"of {n_sta})")

    def _draw_progress(self, history: np.ndarray) -> None:
        if not len(history):
            self.progress_info.setText("mapping: no posterior yet (planner)")
            return
        n, precision, recall, left = history[-1]
        self.precision_curve.setData(history[:, 0], history[:, 1], connect="finite")
        self.recall_curve.setData(history[:, 0], history[:, 2], connect="finite")
        count = float(np.nan_to_num(history[:, 0]).max())
        if not 0.4 * self._map_stims <= count <= self._map_stims:
            # A quarter of room ahead: the axis is redrawn every 25 % more stimulations,
            # not with each one.
            self._map_stims = max(1.25 * count, 10.0)
            self.map_plot.setXRange(0, self._map_stims, padding=0.02)
        parts = [f"after {n:.0f} stimulations"]
        if np.isfinite(precision) or np.isfinite(recall):
            parts.append(f"precision {precision:.2f}, recall {recall:.2f} vs truth")
        else:
            parts.append("no ground truth to score against")
        if np.isfinite(left):
            parts.append(f"about {left:.0f} more expected")
        self.progress_info.setText("mapping: " + "; ".join(parts))
