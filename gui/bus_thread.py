"""All of the dashboard's bus input, on its own thread.

``BusThread`` (a ``QThread``) owns a ``rig.bus.Subscriber`` (zmq sockets belong to the
thread that made them), blocks in ``poll`` on it and files every message into a
``LiveStore``. Nothing here touches a widget: the panels redraw on a screen-rate timer from
the store's newest data (improv's dashboard read its queues on the GUI thread every 10 ms;
that couples redraw cost to message rate, which is what this split avoids).
"""
from __future__ import annotations

import logging
import threading

import zmq
from PyQt6.QtCore import QThread

from rig.bus import Endpoints, Keys, Subscriber
from gui.store import LiveStore
from rig.messages import (ANATOMY, BEHAVIOUR, DECODED, FRAME, HEARTBEAT, LOG, POSTERIOR, SALIENCE,
                          STIMULUS, TAIL, TRACES)

log = logging.getLogger(__name__)

# Topic prefixes the dashboard draws. Not "" (everything): topics no panel shows are never
# sent to this process. Imaging frames (`frame`) come decimated by the reader, and the
# high-water mark drops them for this window rather than for acquisition.
TOPICS = (TRACES, TAIL, BEHAVIOUR, DECODED, STIMULUS, "stim.", POSTERIOR,
          HEARTBEAT, LOG, "sim.", ANATOMY, SALIENCE, "camera.", FRAME)

POLL_MS = 50  # how soon a stop request is noticed when the bus is quiet
BATCH = 2000  # messages drained before the subscriber's counters are refreshed


def pump(sub: Subscriber, store: LiveStore, stop: threading.Event | None = None,
         should_stop=None, poll_ms: int = POLL_MS) -> None:
    """Receive into ``store`` until ``stop`` is set or ``should_stop()`` is true."""
    while not ((stop is not None and stop.is_set()) or (should_stop and should_stop())):
        if not sub.sock.poll(poll_ms):
            continue
        for _ in range(BATCH):
            try:
                frames = sub.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg = sub.accept(frames)
            if msg is not None:
                store.add(msg)
        store.set_subscriber_stats(sub.received, sub.malformed, sub.drops)


class BusThread(QThread):
    """Subscribes to the loop's bus at ``endpoints.sub`` and fills ``store``.

    Parameters
    ----------
    endpoints : rig.bus.Endpoints
        The loop's endpoints (from its run folder's ``endpoints.json``).
    store : LiveStore
        Where received messages go.
    keys : rig.bus.Keys, optional
        CURVE keys when the bus leaves this machine.
    hwm : int
        Receive high-water mark: past it the proxy drops for the dashboard, never for
        acquisition; the drops are counted and shown.
    """

    def __init__(self, endpoints: Endpoints, store: LiveStore, keys: Keys | None = None,
                 hwm: int = 1000, topics=TOPICS, parent=None):
        super().__init__(parent)
        self.endpoints = endpoints
        self.store = store
        self.keys = keys
        self.hwm = hwm
        self.topics = tuple(topics)
        self.error = ""
        self.setObjectName("rig-gui-bus")

    def run(self) -> None:
        try:
            sub = Subscriber(self.endpoints.sub, self.topics, self.hwm, self.keys)
        except zmq.ZMQError as exc:
            self.error = f"cannot subscribe to {self.endpoints.sub}: {exc}"
            log.error("%s", self.error)
            return
        try:
            pump(sub, self.store, should_stop=self.isInterruptionRequested)
        finally:
            sub.close()

    def stop(self, timeout_ms: int = 2000) -> None:
        """Ask the thread to end and wait for it (it notices within ``POLL_MS``)."""
        self.requestInterruption()
        self.wait(timeout_ms)
