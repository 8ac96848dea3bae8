"""Connectivity mapping by holographic ensemble stimulation (noisy group testing).

Library modules (arrays in, arrays out, no bus): ``model`` (OR-channel model and simulator),
``posterior`` (streaming variational-Bayes posterior, numba kernels in ``_kernels``),
``reference`` (cvxpy batch decoders), ``design`` (random and adaptive ensembles),
``responses`` (traces -> outcomes), ``hologram`` (targets -> SLM phase), ``safety``,
``device``. ``node`` holds the bus nodes (Planner, SLM).
"""
