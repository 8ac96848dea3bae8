"""Recording, replay and import of sessions.

The recorder node (``rig.recording.recorder``) writes every bus message of a run to one MCAP
file (``rig.recording.format``); ``rig replay`` plays one back on the bus; ``read_session`` /
``write_session`` convert between files (Rig recordings, suite2p folders, NWB) and the
in-memory ``rig.session.Session``.
"""
from rig.recording.format import RecordingError
from rig.recording.sessions import read_session, write_session

__all__ = ["RecordingError", "read_session", "write_session"]
