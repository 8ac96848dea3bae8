"""A lab's own devices, each in one file's worth of code, named in a config as
``"devices_example:SyntheticReader"`` and ``"devices_example:LabSLM"``; Rig is not touched.

Neither inherits from Rig: having the methods of ``rig.readers.Reader`` /
``stim.device.SLMDevice`` is what counts (``rig.devices``).
"""
import json
import time
from pathlib import Path

import numpy as np

from rig.readers import Frame


class SyntheticReader:
    """Frames of a label image's cells brightening in turn, as a home-made acquisition
    would hand them over; ends after ``frames`` frames."""

    rate_hz = 20.0

    def __init__(self, shape, timeout_s, labels: str, frames: int = 20, t0_ns: int = 0):
        self.labels = np.load(labels)
        self.n_frames = frames
        self.t0_ns = t0_ns or time.time_ns()
        self.i = 0

    def next_frame(self, timeout_s=None):
        if self.i >= self.n_frames:
            return None  # the acquisition ended
        image = (1000 + 500 * (self.labels == 1 + self.i % self.labels.max())).astype(np.uint16)
        frame = Frame(image, self.i, self.t0_ns + self.i * 50_000_000, {"laser": "on"})
        self.i += 1
        return frame

    def cancel(self):
        pass

    def close(self):
        pass

    def stats(self):
        return {"synthetic_frames": self.i}


class LabSLM:
    """An SLM that writes what it is asked to a log folder (a stand-in for a vendor SDK)."""

    def __init__(self, log_dir: str, shape=(64, 64)):
        self.shape = tuple(shape)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.shown = 0

    def display(self, phase):
        np.save(self.log_dir / f"phase{self.shown}.npy", phase)
        self.shown += 1

    def fire(self, power_mw_total):
        t = time.time_ns()
        with open(self.log_dir / "fired.jsonl", "a") as f:
            f.write(json.dumps({"t_ns": t, "mw": power_mw_total}) + "\n")
        return t

    def close(self):
        (self.log_dir / "closed").touch()
