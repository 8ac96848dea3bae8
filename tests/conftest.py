"""Shared fixtures: real sockets on random ports, closed in teardown; Qt offscreen."""
import gc
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import pytest

from rig.bus import Proxy


@pytest.fixture
def proxy():
    p = Proxy()
    yield p
    p.close()


def _qt_app():
    """The QApplication, if a test has made one (never imports Qt for the others)."""
    widgets = sys.modules.get("PyQt6.QtWidgets")
    return widgets.QApplication.instance() if widgets else None


@pytest.fixture(autouse=True)
def qt_widgets_deleted_in_order():
    """Delete the top-level widgets a test leaves, parents before children, before the next.

    Left to Python's cycle collector, a pyqtgraph panel (its items hold each other through
    signals) is freed at a random later moment in a random order, and a linked view can then
    get an event after its children are gone: a segfault of the whole run.
    """
    app = _qt_app()
    before = app.topLevelWidgets() if app else []  # e.g. a module-scoped window: kept
    yield
    app = _qt_app()
    if app is None:
        return
    from PyQt6.QtCore import QCoreApplication, QEvent

    for widget in app.topLevelWidgets():
        # only the dashboard's own windows and panels: the helpers pyqtgraph makes (view
        # menus, popups) belong to its items and go with them
        ours = type(widget).__module__.startswith("gui.") and widget.parent() is None
        if ours and not any(widget is kept for kept in before):
            widget.close()
            widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
