"""Loop health: every node's state, message rates, drops, and latency per hop and end to end.

All of it comes from the nodes' heartbeats (``rig.node.Node.heartbeat``: status, running,
armed, counters, drops, malformed, and per received topic two latency histograms, ``hop``
= send to receipt and ``age`` = frame acquisition to receipt), plus what the dashboard
itself received. The supervisor's restart counts come from its status reply when the
window has one (``set_supervisor_status``), which also lists nodes still starting (no
heartbeat yet). The node table is as tall as its rows, so every node shows; rates keep
three significant figures (0.35/s, not 0.0/s); a repeated event is counted, not repeated.
Tables refresh at most twice a second: a person
cannot read faster, and rebuilding table cells is the costly part of a redraw.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableWidget,
                             QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from gui.panels import legend_label, status_label, title_label
from rig.messages import HEARTBEAT
from rig.telemetry import N_BINS, LatencyHistogram

# Short headers: the health column is narrow. restarts = "rst"; bad = malformed messages;
# age = seconds since the node's last heartbeat. Latency columns are ms.
NODE_COLUMNS = ("node", "status", "run", "armed", "rst", "in", "out", "drops", "bad", "err",
                "work p99", "age s")  # work: the node's handler/step time, ms
EDGE_COLUMNS = ("node<-topic", "n", "hop p50", "hop p99", "acq p50", "acq p99", "acq max")
# Log-spaced bin edges of rig.telemetry, as log10(ms): 1 us is -3, 10 bins per decade.
BIN_EDGES_LOG_MS = -3.0 + np.arange(N_BINS + 1) / 10.0
GUI_NODE = "dashboard"  # the edges this window measures itself
STALE_S = 3.0  # a heartbeat older than this marks its node as silent


class HealthPanel(QWidget):
    """Per-node table, topic rates, latency edges and the histograms of one chosen edge."""

    FIT_EVERY = 10  # refreshes between column fits: texts grow ("ready" -> "running")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._refreshes = 0
        self._restarts: dict[str, int] = {}
        self._starting: set[str] = set()  # nodes the supervisor is still starting
        self._edge_chosen = False  # until a person picks an edge, follow the best default
        self.edges: dict[str, dict[str, LatencyHistogram]] = {}

        self.nodes_table = _table(NODE_COLUMNS)
        self.edges_table = _table(EDGE_COLUMNS)
        self.rates = status_label("topics: -", wrap=True)
        self.end_to_end = status_label("end to end: -", wrap=True)
        self.events = status_label("events: -", wrap=True)  # the latest `log` messages
        self.edge_box = QComboBox()
        self.edge_box.setMinimumContentsLength(18)
        self.edge_box.activated.connect(self._on_edge_picked)

        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("left", "count")
        self.plot.getAxis("bottom").setTicks([[(v, t) for v, t in (
            (-3, "1us"), (-2, "10us"), (-1, "0.1ms"), (0, "1ms"), (1, "10ms"), (2, "100ms"),
            (3, "1s"), (4, "10s"))]])
        self.hop_curve = self.plot.plot(stepMode="center", pen=pg.mkPen("c", width=1))
        self.age_curve = self.plot.plot(stepMode="center", pen=pg.mkPen("y", width=1))

        pick = QHBoxLayout()
        pick.addWidget(QLabel("latency of"))
        pick.addWidget(self.edge_box, 1)
        # Two tabs: the nodes at a glance, and latency in detail; one column of both would
        # squeeze the node table to a few rows in a laptop-sized dock.
        nodes_tab, latency_tab = QWidget(), QWidget()
        first = QVBoxLayout(nodes_tab)
        first.setContentsMargins(0, 0, 0, 0)
        first.addWidget(self.nodes_table)
        first.addWidget(self.rates)
        first.addWidget(self.end_to_end)
        first.addWidget(self.events)
        first.addStretch(1)
        second = QVBoxLayout(latency_tab)
        second.setContentsMargins(0, 0, 0, 0)
        second.addWidget(self.edges_table, 3)
        second.addLayout(pick)
        second.addWidget(legend_label((("hop (sent -> received)", "cyan"),
                                       ("since acquisition", "yellow"))))
        second.addWidget(self.plot, 3)
        self.tabs = QTabWidget()
        self.tabs.addTab(nodes_tab, "nodes")
        self.tabs.addTab(latency_tab, "latency")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(title_label("Loop health"))
        layout.addWidget(self.tabs)

    def _on_edge_picked(self, _index: int) -> None:
        self._edge_chosen = True
        self._draw_histogram()

    def set_supervisor_status(self, status: dict) -> None:
        """Restart counts from the supervisor's STATUS reply ({node: {"restarts": n, ...}})."""
        self._restarts = {n: int(s.get("restarts", 0)) for n, s in status.items()
                          if isinstance(s, dict)}
        self._starting = {n for n, s in status.items()
                          if isinstance(s, dict) and s.get("status") == "starting"}

    def refresh(self, store) -> None:
        # How often this runs is the window's REDRAW_HZ["health"].
        self._refreshes += 1
        nodes = store.nodes()
        resized = self._fill_nodes(nodes)
        self._fill_rates(store)
        with store.lock:
            logs = [list(entry) for entry in list(store.logs)[-4:]]
        if logs:
            self.events.setText("events: " + " | ".join(
                f"{source}: {text[:100]}" + (f" (x{count})" if count > 1 else "")
                for source, _, text, count, _ in reversed(logs)))
        self.edges = self._collect_edges(nodes, store)
        resized |= self._fill_edges()
        self._draw_histogram()
        if resized or self._refreshes % self.FIT_EVERY == 1:
            self.nodes_table.resizeColumnsToContents()
            self.edges_table.resizeColumnsToContents()

    def _fill_nodes(self, nodes: dict) -> bool:
        """Fill the node table; True if its row count changed."""
        table = self.nodes_table
        nodes = {**{n: ({"status": "starting"}, 0.0) for n in self._starting - set(nodes)},
                 **nodes}
        resized = _resize(table, len(nodes))
        if resized:  # as tall as its rows: every node shows, whatever the dock's height
            rows = table.verticalHeader().defaultSectionSize() * len(nodes)
            scroll = table.horizontalScrollBar().sizeHint().height()
            table.setFixedHeight(table.horizontalHeader().sizeHint().height() + rows + scroll + 4)
        for row, (name, (beat, age)) in enumerate(sorted(nodes.items())):
            counters = beat.get("counters") or {}
            silent = age > STALE_S and beat.get("status") != "exited"
            status = "silent" if silent else str(beat.get("status", "?"))
            values = (name, status, _yes(beat.get("running")), _yes(beat.get("armed")),
                      self._restarts.get(name, "-"), beat.get("msgs_in", 0),
                      counters.get("msgs_out", 0), sum((beat.get("drops") or {}).values()),
                      beat.get("malformed", 0), counters.get("errors", 0),
                      _ms(LatencyHistogram.from_wire(beat["handler"]), 99)
                      if isinstance(beat.get("handler"), dict) else "-",
                      f"{age:.1f}" if beat.get("status") != "starting" else "-")
            for col, value in enumerate(values):
                warn = ((col == 1 and status in ("silent", "exited"))
                        or (col in (7, 8, 9) and value not in (0, "0")))
                colour = "red" if col == 3 and beat.get("armed") else "orange" if warn else None
                _set_cell(table, row, col, str(value), colour)
        return resized

    def _fill_rates(self, store) -> None:
        rates = store.rates()
        with store.lock:
            drops = dict(store.drops)
        parts = []
        for topic in sorted(rates):
            if topic.startswith("_"):
                continue
            drop = f" ({drops[topic]} lost here)" if drops.get(topic) else ""
            parts.append(f"{topic} {_rate(rates[topic])}/s{drop}")
        self.rates.setText("topics: " + ("  ".join(parts) if parts else "-"))

    @staticmethod
    def _collect_edges(nodes: dict, store) -> dict:
        edges = {}
        for name, (beat, _) in nodes.items():
            for topic, hists in (beat.get("latency") or {}).items():
                if topic.startswith("_"):
                    continue
                edges[f"{name}<-{topic}"] = {k: LatencyHistogram.from_wire(v)
                                             for k, v in hists.items()}
        with store.lock:
            for topic, hists in store.latency.items():
                if not topic.startswith("_") and topic != HEARTBEAT:
                    edges[f"{GUI_NODE}<-{topic}"] = {k: LatencyHistogram(
                        dict(enumerate(h.counts)), h.max_ns) for k, h in hists.items()}
        return edges

    def _fill_edges(self) -> bool:
        """Fill the edge table and the edge picker; True if the table's row count changed."""
        table = self.edges_table
        names = sorted(self.edges)
        resized = _resize(table, len(names))
        for row, name in enumerate(names):
            hop, age = self.edges[name].get("hop"), self.edges[name].get("age")
            values = (name, hop.n if hop else 0, _ms(hop, 50), _ms(hop, 99), _ms(age, 50),
                      _ms(age, 99), f"{age.max_ns / 1e6:.1f}" if age and age.n else "-")
            for col, value in enumerate(values):
                _set_cell(table, row, col, str(value))
        current = self.edge_box.currentText()
        if [self.edge_box.itemText(i) for i in range(self.edge_box.count())] != names:
            self.edge_box.blockSignals(True)
            self.edge_box.clear()
            self.edge_box.addItems(names)
            keep = self._edge_chosen and current in names
            default = current if keep else _default_edge(names)
            if default:
                self.edge_box.setCurrentText(default)
            self.edge_box.blockSignals(False)
        loop = [n for n in names if n.endswith("<-stim.fired") and not n.startswith(GUI_NODE)]
        if loop:
            age = self.edges[loop[0]].get("age")
            self.end_to_end.setText(f"end to end (frame acquired -> stimulation fired, at "
                                    f"{loop[0].split('<-')[0]}): p50 {_ms(age, 50)} ms, "
                                    f"p99 {_ms(age, 99)} ms, n {age.n if age else 0}")
        else:
            self.end_to_end.setText("end to end: no stimulation fired yet")
        return resized

    def _draw_histogram(self) -> None:
        hists = self.edges.get(self.edge_box.currentText())
        for kind, curve in (("hop", self.hop_curve), ("age", self.age_curve)):
            hist = hists.get(kind) if hists else None
            if hist is None or hist.n == 0:
                curve.setData([], [])
            else:
                curve.setData(BIN_EDGES_LOG_MS, np.asarray(hist.counts, float))


def _table(columns) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.verticalHeader().setVisible(False)
    # Interactive, not ResizeToContents: the latter re-measures every cell on every change
    # (over 100 ms per refresh here); columns are fitted once when rows come or go.
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().lineSpacing() + 4)
    return table


def _resize(table: QTableWidget, rows: int) -> bool:
    """Give ``table`` exactly ``rows`` rows of items; True if the count changed."""
    if table.rowCount() == rows:
        return False
    table.setRowCount(rows)
    for row in range(rows):
        for col in range(table.columnCount()):
            if table.item(row, col) is None:
                table.setItem(row, col, QTableWidgetItem(""))
    return True


def _set_cell(table: QTableWidget, row: int, col: int, text: str,
              colour: str | None = None) -> None:
    """Change a cell only when its text or colour changed (creating items is the slow part)."""
    item = table.item(row, col)
    if item.text() != text:
        item.setText(text)
    brush = QColor(colour) if colour else table.palette().text().color()
    if item.foreground().color() != brush:
        item.setForeground(brush)


def _rate(per_s: float) -> str:
    """Three significant figures, so a slow topic (0.35/s) never reads 0.0/s."""
    return "0" if per_s == 0 else f"{per_s:.3g}"


def _yes(value) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _ms(hist: LatencyHistogram | None, q: float) -> str:
    if hist is None or hist.n == 0:
        return "-"
    value = hist.percentile_ms(q)
    return "-" if math.isnan(value) else f"{value:.2f}"


def _default_edge(names: list[str]) -> str:
    """The most telling edge: the loop's end (stim.fired), then decoding, then acquisition;
    a node's own measurement before the dashboard's."""
    for own in (False, True):
        for suffix in ("<-stim.fired", "<-decoded", "<-traces", "<-tail"):
            for name in names:
                if name.endswith(suffix) and name.startswith(GUI_NODE) == own:
                    return name
    return names[0] if names else ""
