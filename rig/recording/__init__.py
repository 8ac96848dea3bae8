"""Recording, replay and import of sessions.

The recorder node (``rig.recording.recorder``) writes every bus message of a run to one MCAP
file (``rig.recording.format``); ``rig replay`` plays one back on the bus; ``read_session`` /
``write_session`` convert between files (Rig recordings, suite2p folders, NWB) and the
in-memory ``rig.session.Session``. Imported lazily, so that ``rig --help`` (which imports
``rig.recording.commands``) stays fast.
"""
__all__ = ["RecordingError", "read_session", "write_session"]


def __getattr__(name):
    if name == "RecordingError":
        from rig.recording.format import RecordingError

        return RecordingError
    if name in ("read_session", "write_session"):
        from rig.recording import sessions

        return getattr(sessions, name)
    raise AttributeError(f"module 'rig.recording' has no attribute {name!r}")
