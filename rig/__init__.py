"""Rig: the runtime of a real-time closed-loop controller for whole-brain imaging rigs.

The bus (``rig.bus``), typed messages (``rig.messages``), the node runtime (``rig.node``),
the supervisor and config, the recorder, replay and the acquisition readers live here;
the science lives in ``decoders``, ``stim`` and ``sims``, the dashboard in ``gui``.
"""
__version__ = "0.1.0"
