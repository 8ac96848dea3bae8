"""Simulated larval zebrafish rig: the fish, its microscope images and recorded sessions.

Plain library (no bus): ``Fish(FishConfig(...)).step()`` for one imaging volume at a time,
``simulate(config, duration_s=...)`` for a whole ``rig.session.Session``, ``sims.imaging``
for raw plane images with neuron footprints. ``sims.node`` puts the fish on the bus.
"""
from sims.fish import (LATENT_NAMES, STIMULUS_NAMES, Fish, FishConfig, FishConfigError,
                       Stimulation, Volume)
from sims.simulate import simulate

__all__ = ["Fish", "FishConfig", "FishConfigError", "Stimulation", "Volume", "simulate",
           "STIMULUS_NAMES", "LATENT_NAMES"]
