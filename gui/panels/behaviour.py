"""Behaviour: the observed tail and the decoder's prediction, the raw camera, and their r.

Top: observed, the camera's per-imaging-frame tail (``tail``, the decoder's labels; on a
simulated fish without a camera node the simulator's true tail, ``sim.tail``, labelled so)
and decoded (``decoded`` ``pred``), on an axis of their own so the decoder's few degrees
are not flattened by the raw camera's tens. Middle: the camera-rate tail angle
(``behaviour`` ``cum_angle``) and vigour, with bouts marked. Bottom: running r. Until the
decoder publishes, the line says what it is doing (its heartbeat's "phase" and
"ready_in_s", or that it has not predicted yet). Both are reduced to one angle per frame
(tail tip by default) in degrees. The running correlation is Pearson r between observed
and decoded over the last ``corr_frames`` frames present in both (matched by imaging frame
index, never by arrival order), shown as a number and as a rolling curve below.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QSpinBox, QVBoxLayout, QWidget

from gui.panels import SteadyRange, legend_label, line, status_label, title_label
from gui.panels.marks import TimeMarks
from rig.messages import BEHAVIOUR, DECODED, SIM_TAIL, TAIL

REDUCTIONS = ("tail tip", "segment mean")


def rolling_r(a: np.ndarray, b: np.ndarray, window: int) -> np.ndarray:
    """Pearson r of ``a`` and ``b`` over each trailing ``window`` (NaN where undefined).

    Returns (len(a),) float64; entry i covers a[i - window + 1 : i + 1]. Cumulative sums in
    float64 keep it exact enough for a display (checked against np.corrcoef in the tests).
    """
    n = len(a)
    out = np.full(n, np.nan)
    if n < window or window < 3:
        return out
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    c = [np.concatenate(([0.0], np.cumsum(v))) for v in (a, b, a * a, b * b, a * b)]
    sa, sb, saa, sbb, sab = (v[window:] - v[:-window] for v in c)
    cov = sab - sa * sb / window
    var = (saa - sa * sa / window) * (sbb - sb * sb / window)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var)
    # Undefined where either window is constant to float64 precision: the cancellation in
    # saa - sa*sa/window leaves rounding of order eps * saa, not zero, for a non-integer value.
    r[~(var > 1e-12 * (saa * sbb))] = np.nan
    out[window - 1:] = np.clip(r, -1.0, 1.0)
    return out


class BehaviourPanel(QWidget):
    """Observed vs decoded tail angle against time, with running Pearson r.

    Parameters
    ----------
    frames : int
        Imaging frames drawn.
    corr_frames : int
        Frames in the running correlation's window.
    """

    # Time ranges shown (s): the smallest that holds the data. Stepped, so that while the
    # data fill the plot the time axes are redrawn a few times, not on every frame; 90 s at
    # most: longer, and bouts are too thin to see.
    SPANS_S = (5.0, 10.0, 20.0, 30.0, 60.0, 90.0)

    def __init__(self, frames: int = 600, corr_frames: int = 40, parent=None):
        super().__init__(parent)
        self.frames = frames
        self._versions = ()  # (tail/decoded/sim.tail versions, behaviour version) drawn
        self._tail = self._decoded = None  # last_frames of each, newest self.frames
        self._r = None  # (t_ns, rolling r) of the matched frames
        self._camera_seen = 0  # behaviour rows taken from the store
        self._camera_t = np.zeros(0, np.int64)  # camera-rate rows on the plot: time, angle
        self._camera_angle = np.zeros(0, np.float32)
        self._camera_vigour = np.zeros(0, np.float32)
        self.decoder_note = ""  # what the decoder is doing while it has no prediction
        self._nodes_version = -1
        self.observed = "none"  # where the observed tail comes from
        self.r = float("nan")  # the latest running r, for tests and the status line
        self.n_matched = 0

        self.reduce_box = QComboBox()
        self.reduce_box.addItems(REDUCTIONS)
        self.reduce_box.currentTextChanged.connect(lambda _: self._invalidate())
        self.corr_box = QSpinBox()
        self.corr_box.setRange(5, 1000)
        self.corr_box.setValue(corr_frames)
        self.corr_box.setPrefix("r over ")
        self.corr_box.setSuffix(" frames")
        self.corr_box.valueChanged.connect(lambda _: self._invalidate())
        self.info = status_label("waiting for tail and decoded")
        bar = QHBoxLayout()
        for widget in (title_label("Behaviour: observed vs decoded"), self.reduce_box,
                       self.corr_box):
            bar.addWidget(widget)
        bar.addStretch(1)

        self.view = pg.GraphicsLayoutWidget()
        self.plot = self.view.addPlot(row=0, col=0)
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("left", "tail (deg)")
        self.plot.enableAutoRange(x=False)  # x follows the data span (set in refresh)
        self._span = 0.0
        self.tail_curve = line(self.plot, pg.mkPen("w", width=1))
        self.decoded_curve = line(self.plot, pg.mkPen((255, 150, 0), width=1))
        self.marks = TimeMarks(self.plot)
        self.camera_plot = self.view.addPlot(row=1, col=0)
        self.camera_plot.setMenuEnabled(False)
        self.camera_plot.setXLink(self.plot)
        self.camera_plot.setLabel("left", "camera (deg)")
        self.camera_curve = self.camera_plot.plot(pen=pg.mkPen((150, 150, 150), width=1))
        self.vigour_curve = self.camera_plot.plot(pen=pg.mkPen((80, 160, 255), width=1))
        for curve in (self.camera_curve, self.vigour_curve):  # thousands of camera samples:
            curve.setDownsampling(auto=True, method="peak")  # one min/max pair per pixel
            curve.setClipToView(True)
        self.camera_marks = TimeMarks(self.camera_plot, stims=False, epochs=False)
        self.tail_range = SteadyRange(self.plot)
        self.camera_range = SteadyRange(self.camera_plot)
        self.r_plot = self.view.addPlot(row=2, col=0)
        self.r_plot.setMenuEnabled(False)
        self.r_plot.setXLink(self.plot)
        self.r_plot.setYRange(-1, 1)
        self.r_plot.setLabel("left", "r")
        self.r_plot.setLabel("bottom", "time before now (s)")
        self.r_plot.addLine(y=0, pen=pg.mkPen((90, 90, 90), width=1))
        self.r_curve = line(self.r_plot, pg.mkPen("g", width=1))
        for plot in (self.plot, self.camera_plot, self.r_plot):
            plot.getAxis("left").setWidth(48)  # aligned time axes
        self.view.ci.layout.setRowStretchFactor(0, 3)
        self.view.ci.layout.setRowStretchFactor(1, 2)
        self.view.ci.layout.setRowStretchFactor(2, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.info)  # a line of its own: it says what the decoder is doing
        layout.addWidget(legend_label((("observed", "white"), ("decoded", "#ff9600"),
                                       ("camera angle", "#969696"), ("vigour", "#50a0ff"),
                                       ("bout", "#ff5050"), ("stimulation", "#00dcff"),
                                       ("running r", "#00ff00"))))
        layout.addWidget(self.view)

    def _invalidate(self) -> None:
        self._versions = ()

    def _reduce(self, rows: np.ndarray) -> np.ndarray:
        if rows.shape[1] == 0:
            return np.zeros(len(rows))
        if self.reduce_box.currentText() == "segment mean":
            return np.degrees(np.nanmean(rows, axis=1))
        return np.degrees(rows[:, -1])

    def refresh(self, store) -> None:
        frame_versions = tuple(store.version(t) for t in (TAIL, DECODED, SIM_TAIL))
        camera_version = store.version(BEHAVIOUR)
        nodes_version = store.version("nodes")  # heartbeats: what the decoder says it does
        if nodes_version != self._nodes_version:
            self._nodes_version = nodes_version
            note = decoder_note(store)
            if note != self.decoder_note:
                self.decoder_note = note
                self._versions = ()  # the info line says it: redo it
        if (frame_versions, camera_version) == self._versions:
            return
        changed = not self._versions or frame_versions != self._versions[0]
        self._versions = (frame_versions, camera_version)
        if changed:  # per-frame data and its r: only when tail or decoded output changed
            tail = store.last_frames(TAIL, self.frames)
            self.observed = "camera"
            if tail is None:  # no camera node: the simulator's true tail stands in, says so
                tail = store.last_frames("true_tail", self.frames)
                self.observed = "true (sim)" if tail is not None else "none"
            self._tail, self._decoded = tail, store.last_frames(DECODED, self.frames)
            self._r = self._running_r(self._tail, self._decoded)
        self._take_camera(store)
        self._draw(store)

    def _take_camera(self, store) -> None:
        """Append the camera-rate rows not yet seen (copying only those) to the panel's own."""
        got = store.frames_since(BEHAVIOUR, self._camera_seen)
        if got is None:
            return
        rows, _, t_ns, self._camera_seen = got
        if len(t_ns) and len(self._camera_t) and t_ns[0] < self._camera_t[-1]:
            # time went back (a replay looped): restart
            self._camera_t, self._camera_angle, self._camera_vigour = (
                t_ns[:0], rows[:0, 0], rows[:0, 1])
        keep = store.camera_capacity
        self._camera_t = np.concatenate((self._camera_t, t_ns))[-keep:]
        self._camera_angle = np.concatenate((self._camera_angle, rows[:, 0]))[-keep:]
        self._camera_vigour = np.concatenate((self._camera_vigour, rows[:, 1]))[-keep:]

    def _draw(self, store) -> None:
        tail, decoded = self._tail, self._decoded
        ends = [got[2][-1] for got in (tail, decoded) if got is not None]
        if len(self._camera_t):
            ends.append(self._camera_t[-1])
        if not ends:
            return
        t_ref = max(ends)  # newest sample: x = 0 (acquisition clock, works for replays too)
        t_start = None
        shown = []
        for got, curve in ((tail, self.tail_curve), (decoded, self.decoded_curve)):
            if got is None:
                curve.setData([], [])
                continue
            shown.append(self._reduce(got[0]))
            curve.setData((got[2] - t_ref) / 1e9, shown[-1])
            t_start = got[2][0] if t_start is None else min(t_start, got[2][0])
        self.tail_range.fit(*shown)
        span = 0.0
        if t_start is not None:  # 5 % past a step still fits it (the oldest rows are cut)
            held = (t_ref - t_start) / 1e9 / 1.05
            span = next((s for s in self.SPANS_S if s >= held), self.SPANS_S[-1])
        if span > 0 and span != self._span:
            # Only when it moves: a fixed range keeps the axes' cached drawing.
            self._span = span
            self.plot.setXRange(-span, 0, padding=0.01)
        if len(self._camera_t):
            if t_start is not None:  # older camera rows are off the plot: drop them
                first = int(np.searchsorted(self._camera_t, t_start))
                self._camera_t, self._camera_angle, self._camera_vigour = (
                    self._camera_t[first:], self._camera_angle[first:],
                    self._camera_vigour[first:])
            x = (self._camera_t - t_ref) / 1e9
            angle, vigour = np.degrees(self._camera_angle), np.degrees(self._camera_vigour)
            self.camera_curve.setData(x, angle)
            self.vigour_curve.setData(x, vigour)
            self.camera_range.fit(angle, vigour)
        span = span or self._span
        y = self.plot.getViewBox().viewRange()[1]
        self.marks.update(store, int(t_ref), span, (float(y[0]), float(y[1])))
        y = self.camera_plot.getViewBox().viewRange()[1]
        self.camera_marks.update(store, int(t_ref), span, (float(y[0]), float(y[1])))
        if self._r is not None:
            t_r, r = self._r
            self.r_curve.setData((t_r - t_ref) / 1e9, r, connect="finite")

    def _running_r(self, tail, decoded):
        """(t_ns, rolling r) over frames present in both, or None (and says what is missing)."""
        window = self.corr_box.value()
        if tail is None or decoded is None:
            self.r_curve.setData([], [])
            missing = " and ".join(n for n, got in (("tail", tail), ("decoded", decoded))
                                   if got is None)
            note = f"; {self.decoder_note}" if self.decoder_note else ""
            self.info.setText(f"observed: {self.observed}; waiting for {missing}{note}")
            return None
        _, i_tail, i_dec = np.intersect1d(tail[1], decoded[1], return_indices=True)
        self.n_matched = len(i_tail)
        observed = self._reduce(tail[0][i_tail])
        predicted = self._reduce(decoded[0][i_dec])
        r = rolling_r(observed, predicted, window)
        self.r = float(r[-1]) if len(r) else float("nan")
        text = "n/a" if np.isnan(self.r) else f"{self.r:+.2f}"
        why = ""
        if np.isnan(self.r):
            why = f" ({self.decoder_note or f'fewer than {window} matched frames'})"
        elif self.decoder_note:
            why = f" ({self.decoder_note})"
        self.info.setText(f"r = {text}{why}  observed: {self.observed}")
        return tail[2][i_tail], r


def decoder_note(store) -> str:
    """What the decoder says it is doing, e.g. "decoder fitting, ready in 23 s"; "" once ready.

    From the heartbeat of the node that publishes ``decoded`` (else one named "decoder"):
    its stats' "phase" and "ready_in_s" where it reports them, else its "ready" flag.
    """
    from gui.state import phases

    latest = store.get_latest(DECODED)
    name = latest.source if latest is not None else "decoder"
    beat = {n: b for n, (b, _) in store.nodes().items()}.get(name)
    if beat is None:
        return "" if latest is not None else "no decoder heartbeat yet"
    said = phases({name: beat})
    if said:
        return said[0]
    stats = beat.get("stats") or {}
    if stats.get("ready") is False:
        return f"{name} fitting (no prediction yet)"
    return ""
