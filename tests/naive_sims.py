"""Plain, slow reference versions of the simulated fish's fast paths (for tests only)."""
from __future__ import annotations

import numpy as np


def postsynaptic(presyn: np.ndarray, targets) -> set[int]:
    """Non-target neurons with at least one presynaptic partner among ``targets``."""
    tset = {int(t) for t in targets}
    return {j for j in range(len(presyn))
            if j not in tset and any(int(i) in tset for i in presyn[j])}


def calcium_kernel(a_rise: float, a_decay: float, n: int) -> np.ndarray:
    """Response of the indicator state (decay - rise) to one spike at lag 0..n-1."""
    cd = cr = 0.0
    out = []
    for lag in range(n):
        spk = 1.0 if lag == 0 else 0.0
        cd = a_decay * cd + spk
        cr = a_rise * (cr + spk)
        out.append(cd - cr)
    return np.array(out)
