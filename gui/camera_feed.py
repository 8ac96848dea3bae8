"""Feeds the camera engineer's ``CameraPanel`` from the store and sends its tail clicks.

The panel (``gui/panels/camera.py``) takes data through ``update_frame``, ``append`` and
``set_stats`` and draws in ``redraw``; this adapter calls them from the window's redraw
timer with only what is new, and turns the panel's two clicks (``geometryChanged``) into a
``SET tail`` control request to the camera node that published the frames.
"""
from __future__ import annotations

from rig.messages import BEHAVIOUR, CAMERA_FRAME, CAMERA_STATS
from rig.node import Verb


class CameraFeed:
    """Moves new camera data from a ``LiveStore`` into a ``CameraPanel``.

    Parameters
    ----------
    panel : gui.panels.camera.CameraPanel
    send : callable
        ``send(verb, target, args)``, the window's control request.
    """

    def __init__(self, panel, send):
        self.panel = panel
        self._send = send
        self._frame_version = -1
        self._stats_version = -1
        self._seen = 0
        self.camera_node: str | None = None
        panel.geometryChanged.connect(self.send_tail)

    def refresh(self, store) -> None:
        version = store.version(CAMERA_FRAME)
        if version != self._frame_version:
            self._frame_version = version
            msg = store.get_latest(CAMERA_FRAME)
            if msg is not None and "image" in msg.arrays:
                self.camera_node = msg.source
                self.panel.update_frame(msg.arrays["image"], msg.arrays.get("points"))
        got = store.frames_since(BEHAVIOUR, self._seen)
        if got is not None and len(got[0]):
            rows, _, t_ns, self._seen = got
            self.panel.append(t_ns / 1e9, rows[:, 0], rows[:, 1], rows[:, 2] > 0.5)
        version = store.version(CAMERA_STATS)
        if version != self._stats_version:
            self._stats_version = version
            msg = store.get_latest(CAMERA_STATS)
            if msg is not None:
                self.panel.set_stats(msg.meta)
        self.panel.redraw()

    def send_tail(self, base_x: float, base_y: float, tip_x: float, tip_y: float) -> None:
        node = self.camera_node or "camera"
        self._send(Verb.SET, node, {"node": node, "key": "tail",
                                    "value": [base_x, base_y, tip_x, tip_y]})
