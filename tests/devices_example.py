"""A lab's own devices, each a few lines, named in a config as
``"devices_example:SyntheticReader"``, ``"devices_example:LabSLM"`` or
``"devices_example:SimulatedOpticsSLM"``; Rig is not touched.

The first two do not inherit from Rig: having the methods of ``rig.readers.Reader`` /
``stim.device.SLMDevice`` is what counts (``rig.devices``); the third extends Rig's slmsuite
driver with its own ``fire``.
"""
import json
import time
from pathlib import Path

import numpy as np

from rig.readers import Frame
from stim.device import SlmsuiteSLM


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


class SimulatedOpticsSLM(SlmsuiteSLM):
    """slmsuite's simulated SLM, with its simulated camera on the imaging path: the way a
    lab adds its laser gate (here: take the camera's picture while the 'laser' is on and
    save it as ``image{n}.npy`` in ``out_dir``) by overriding ``fire`` in one file."""

    def __init__(self, out_dir: str, camera: dict, **slm_settings):
        from stim.calibration import SlmsuiteCamera

        super().__init__(**slm_settings)
        self.out_dir = Path(out_dir)
        self.camera = SlmsuiteCamera(self, **camera)
        self.fired = 0

    def fire(self, power_mw_total):
        t = time.time_ns()
        image = self.camera.grab()
        tmp = self.out_dir / f".image{self.fired}.npy"
        np.save(tmp, image)
        tmp.replace(self.out_dir / f"image{self.fired}.npy")  # whole files only
        self.fired += 1
        return t
