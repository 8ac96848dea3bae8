"""Connectivity: the planner's posterior as a matrix, its uncertainty, and how mapping goes.

Reads ``posterior`` messages (the planner's dashboard summary):

* arrays (all optional): ``marginals`` (M, M) float: P(connection i -> j) for neurons
  ``ids`` (M,) int32 (rows presynaptic, columns postsynaptic; all N when ``ids`` is absent);
  ``lower``/``upper`` (M, M) bounds on those marginals; ``out_degree`` (N,) expected
  outgoing connections; ``stim_count`` (N,) stimulations of each neuron;
* meta (all optional, shown as they come): ``n_stims``, ``confident_fraction``, ``unsure``,
  ``edges_mean``, ``edges_ci95``, ``stop`` (the stopping rule is met), ``stop_reason``,
  ``precision``/``recall`` against a simulated ground truth.

P is drawn on a log scale (1e-3 .. 1, colour bar beside it): early on every marginal sits
near the prior k/N and a linear scale shows a black square. Uncertainty is ``upper - lower`` when
the bounds are sent, else ``4 p (1 - p)`` (1 at p = 0.5, 0 when certain), on a scale up to
its largest value. The summary line reads as sentences, not as the meta's keys. For a
simulated fish (``sim.truth`` ``presyn`` (N, k)) the panel scores the drawn block itself:
precision and recall of ``p > 0.5``. Stimulations are also counted from ``stim.fired`` so
the count shows even without a posterior.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from gui.panels import colour_bar, lookup_table, quantize, status_label, title_label
from rig.messages import POSTERIOR, STIM_FIRED

SORTS = ("index", "region", "out-degree")
LOG_P_MIN = -3.0  # log10 P drawn at the bottom of the colour scale
MAX_SHOWN = 512  # matrix rows/columns drawn; a larger block is pooled (a screen shows no more)


def truth_block(presyn: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(M, M) bool: ids[a] is a presynaptic partner of ids[b], from ``presyn`` (N, k)."""
    position = {int(n): a for a, n in enumerate(ids)}
    block = np.zeros((len(ids), len(ids)), bool)
    for b, post in enumerate(ids):
        for pre in presyn[int(post)]:
            a = position.get(int(pre))
            if a is not None:
                block[a, b] = True
    return block


def pool(values: np.ndarray, size: int, how: str = "max") -> np.ndarray:
    """Shrink a square (M, M) matrix to at most (size, size) by block max or mean.

    Max keeps a single confident connection visible in its block; mean shows how much of a
    block is still uncertain. Blocks are ceil(M / size) wide; the last ones may be partial.
    """
    m = values.shape[0]
    if m <= size:
        return values
    step = -(-m // size)
    padded_m = -(-m // step) * step
    fill = -np.inf if how == "max" else np.nan
    padded = np.full((padded_m, padded_m), fill, np.float32)
    padded[:m, :m] = values
    blocks = padded.reshape(padded_m // step, step, padded_m // step, step)
    if how == "max":
        return blocks.max(axis=(1, 3))
    return np.nanmean(blocks, axis=(1, 3))


def precision_recall(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a boolean ``estimate`` against boolean ``truth`` (NaN if 0/0)."""
    tp = float(np.count_nonzero(estimate & truth))
    n_est, n_true = np.count_nonzero(estimate), np.count_nonzero(truth)
    return (tp / n_est if n_est else float("nan"), tp / n_true if n_true else float("nan"))


class ConnectivityPanel(QWidget):
    """Posterior matrix and uncertainty side by side, stopping state and convergence."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._version = -1
        self._fired_seen = -1
        self._fitted_len = -1  # neurons in the matrix the views were last fitted to
        self.scores: tuple[float, float] = (float("nan"), float("nan"))

        self.sort_box = QComboBox()
        self.sort_box.addItems(SORTS)
        self.sort_box.currentTextChanged.connect(lambda _: self._force())
        self.count = QLabel("stimulations: 0")
        self.stop_label = status_label("stopping rule: -", right=True)
        self.stats = status_label("waiting for the planner's posterior", wrap=True)
        bar = QHBoxLayout()
        for widget in (title_label("Connectivity"), QLabel("sort"), self.sort_box, self.count):
            bar.addWidget(widget)
        bar.addWidget(self.stop_label, 1)  # takes the rest of the row; clipped, never widening

        self.view = pg.GraphicsLayoutWidget()
        self.items = []
        self.bars = []
        for col, (name, lut, label, hi) in enumerate((
                ("P(i -> j)", "inferno", "log10 P", 0.0),
                ("uncertainty", "viridis", "uncertainty", 1.0))):
            plot = self.view.addPlot(row=0, col=2 * col, title=name)
            plot.setMenuEnabled(False)
            plot.invertY(True)
            plot.setAspectLocked(True)
            plot.setLabel("left", "presynaptic")
            plot.setLabel("bottom", "postsynaptic")
            image = pg.ImageItem(axisOrder="row-major")
            image.setLookupTable(lookup_table(lut))
            plot.addItem(image)
            plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)  # until a posterior comes
            self.items.append(image)
            self.bars.append(colour_bar(self.view.ci, 0, 2 * col + 1, lut,
                                        LOG_P_MIN if col == 0 else 0.0, hi, label))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.view)
        layout.addWidget(self.stats)

    def _force(self) -> None:
        self._version = -1

    def refresh(self, store) -> None:
        fired = store.counts.get(STIM_FIRED, 0)
        version = store.version(POSTERIOR)
        if version == self._version and fired == self._fired_seen:
            return
        self._fired_seen = fired
        msg = store.get_latest(POSTERIOR)
        n_stims = msg.meta.get("n_stims", fired) if msg is not None else fired
        self.count.setText(f"stimulations: {n_stims}")
        if msg is None or version == self._version:
            return
        self._version = version
        self._draw_matrix(store, msg)

    def _order(self, store, ids: np.ndarray, marginals: np.ndarray) -> np.ndarray:
        sort = self.sort_box.currentText()
        if sort == "region":
            regions = store.anatomy.get("regions") if store.anatomy else None
            if regions is not None and ids.max(initial=-1) < len(regions):
                return np.argsort(regions[ids], kind="stable")
        elif sort == "out-degree":
            return np.argsort(-np.nansum(marginals, axis=1), kind="stable")
        return np.arange(len(ids))

    def _draw_matrix(self, store, msg) -> None:
        marginals = msg.arrays.get("marginals")
        if marginals is None or marginals.ndim != 2 or marginals.shape[0] != marginals.shape[1]:
            self.scores = (float("nan"), float("nan"))
            self._show_stats(msg)
            return
        p = np.asarray(marginals, np.float32)
        ids = np.asarray(msg.arrays.get("ids", np.arange(len(p))), np.int64)
        if "lower" in msg.arrays and "upper" in msg.arrays:
            unsure = np.asarray(msg.arrays["upper"], np.float32) - msg.arrays["lower"]
        else:
            unsure = 4.0 * p * (1.0 - p)
        order = self._order(store, ids, p)
        # Pooled shapes need not be MAX_SHOWN (pooling by whole blocks): compare sizes in neurons.
        reshaped = len(p) != self._fitted_len
        self._fitted_len = len(p)
        top = max(float(np.nanmax(unsure)) if unsure.size else 1.0, 1e-3)
        if abs(top - self.bars[1].levels()[1]) > 0.05 * top:
            self.bars[1].setLevels((0.0, top))
        log_p = np.log10(np.clip(p, 10 ** LOG_P_MIN, 1.0))
        for item, values, how, (lo, hi) in zip(self.items, (log_p, unsure), ("max", "mean"),
                                               ((LOG_P_MIN, 0.0), (0.0, top))):
            block = pool(values[np.ix_(order, order)], MAX_SHOWN, how)
            item.setImage(quantize(block, lo, hi), autoLevels=False, levels=(0, 255))
            item.setRect(pg.QtCore.QRectF(0, 0, len(p), len(p)))  # axes in neurons, pooled or not
            if reshaped:  # fit once per matrix size, then keep the range fixed
                view = item.getViewBox()
                view.setRange(xRange=(0, len(p)), yRange=(0, len(p)), padding=0)
                view.disableAutoRange()
        presyn = store.truth.get("presyn") if store.truth else None
        if presyn is not None and ids.max(initial=-1) < len(presyn):
            estimate = np.nan_to_num(p) > 0.5
            np.fill_diagonal(estimate, False)
            key = (id(presyn), ids.tobytes())
            if getattr(self, "_truth_key", None) != key:  # the same block: reuse its truth
                self._truth_key, self._truth = key, truth_block(presyn, ids)
            self.scores = precision_recall(estimate, self._truth)
        else:
            self.scores = (float("nan"), float("nan"))
        self._show_stats(msg)

    def _show_stats(self, msg) -> None:
        meta = msg.meta
        stop = meta.get("stop")
        if stop is None:
            self.stop_label.setText("stopping rule: -")
        else:
            reason = f" ({meta['stop_reason']})" if meta.get("stop_reason") else ""
            self.stop_label.setText(f"stopping rule: {'MET' if stop else 'not met'}{reason}")
        self.stats.setText(summary_text(meta, self.scores))

def _fmt(value) -> str:
    if isinstance(value, float):
        if np.isnan(value):
            return "nan"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def summary_text(meta: dict, scores=(float("nan"), float("nan"))) -> str:
    """The posterior's figures as a sentence or two (what each number means, not its key)."""
    parts = []
    if "edges_mean" in meta:
        ci = meta.get("edges_ci95")
        ci = f" (95%: {_fmt(ci[0])}-{_fmt(ci[1])})" if isinstance(ci, (list, tuple)) and \
            len(ci) == 2 else ""
        parts.append(f"expected connections {_fmt(meta['edges_mean'])}{ci}")
    if "unsure" in meta:
        parts.append(f"{meta['unsure']:,} pairs still unsure" if isinstance(meta["unsure"], int)
                     else f"unsure pairs {_fmt(meta['unsure'])}")
    if "confident_fraction" in meta:
        parts.append(f"{100 * float(meta['confident_fraction']):.1f}% of pairs settled "
                     "(almost all as 'no connection')")
    scored = [(name, meta.get(name)) for name in ("precision", "recall")]
    if all(isinstance(v, (int, float)) for _, v in scored):
        parts.append(f"vs truth: precision {_fmt(scored[0][1])}, recall {_fmt(scored[1][1])}")
    elif not np.isnan(scores[0]) or not np.isnan(scores[1]):
        parts.append(f"block shown vs truth: precision {_fmt(scores[0])}, "
                     f"recall {_fmt(scores[1])}")
    if meta.get("confounded"):
        parts.append(f"{meta['confounded']} stimulations confounded by bouts")
    return "; ".join(parts) or "posterior received (no summary figures)"
