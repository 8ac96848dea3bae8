"""Files written whole or not at all.

A summary or an estimate is rewritten during a run; a crash or a full disk halfway through
must leave the earlier version, never an empty or half-written file. ``atomic_write_bytes``
writes a hidden temporary file next to the target, syncs it, then renames it over the target
(a rename within one folder is atomic on POSIX).
"""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """Replace ``path`` by ``data`` in one step; on failure the earlier file stays.

    Parameters
    ----------
    path : the file to write.
    data : its whole new content.
    durable : fsync before the rename, so that a power cut keeps old or new (False where
        only a crashed process matters and the write repeats often).

    Raises
    ------
    OSError
        Naming the file and the cause (e.g. no space left on device); the temporary file is
        removed and any earlier ``path`` is untouched.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as stream:
            stream.write(data)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}; the earlier "
                                 "file, if any, is kept") from None
    return path
