"""The behaviour camera: frames in, tail angles, vigour and bouts out.

Library first (usable without the bus)::

    from rig.camera import TailTracker, BoutDetector
    tracker = TailTracker.from_points(base=(100, 33), tip=(8, 38), n_segments=10)
    bouts = BoutDetector(fps=700)
    r = tracker.track(frame)           # r.angles (S,) rad, r.cum_angle, r.lost
    bouts.update(r.cum_angle, r.lost)  # bouts.vigour, bouts.moving, finished Bout or None

``rig.camera.node`` wraps these for the bus (``Camera``; the simulator's ``SimCamera`` lives in
``sims.camera``). ``rig track VIDEO`` traces a file offline (``rig.camera.track``).
"""
from rig.camera.bouts import Bout, BoutDetector, detect_bouts
from rig.camera.exposure import ClockMap, ExposureAverager
from rig.camera.sources import FrameSource, SourceError, StackSource, VideoSource, open_source
from rig.camera.vendors import BaslerSource, GenICamSource
from rig.camera.tracker import FrameError, TailResult, TailTracker, estimate_background

__all__ = ["Bout", "BoutDetector", "detect_bouts", "ClockMap", "ExposureAverager", "FrameSource",
           "BaslerSource", "GenICamSource", "SourceError", "StackSource", "VideoSource",
           "open_source", "FrameError", "TailResult", "TailTracker", "estimate_background"]
