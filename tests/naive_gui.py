"""Plain, slow versions of the dashboard's numerics, to check the fast ones against."""
import numpy as np


def rolling_r(a, b, window):
    out = np.full(len(a), np.nan)
    for i in range(window - 1, len(a)):
        x, y = a[i - window + 1:i + 1], b[i - window + 1:i + 1]
        if np.std(x) > 0 and np.std(y) > 0:
            out[i] = np.corrcoef(x, y)[0, 1]
    return out


def truth_block(presyn, ids):
    block = np.zeros((len(ids), len(ids)), bool)
    for a, pre in enumerate(ids):
        for b, post in enumerate(ids):
            block[a, b] = pre in set(presyn[post].tolist())
    return block


def max_image(positions, values, ax_x, ax_y, um_per_px):
    """Each pixel holds the largest value of the neurons binned into it (0 if none)."""
    x, y = positions[:, ax_x], positions[:, ax_y]
    cols = np.floor((x - x.min()) / um_per_px).astype(int)
    rows = np.floor((y - y.min()) / um_per_px).astype(int)
    image = np.zeros((rows.max() + 1, cols.max() + 1), np.uint8)
    for r, c, v in zip(rows, cols, values):
        image[r, c] = max(image[r, c], v)
    return image
