"""Connectivity mapping by holographic ensemble stimulation (noisy group testing).

Library modules (arrays in, arrays out, no bus): ``model`` (OR-channel model and simulator),
``posterior`` (streaming variational-Bayes posterior, numba kernels in ``_kernels``),
``reference`` (cvxpy batch decoders), ``design`` (random and adaptive ensembles),
``responses`` (traces -> outcomes), ``hologram`` (targets -> SLM phase), ``calibration``
(imaging <-> SLM coordinates, ``rig calibrate slm``), ``safety``, ``device`` (SLM drivers).
``node`` holds the Planner node, ``slm_node`` the SLM node.
"""
