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


def max_image(positions, values, ax_x, ax_y, um_per_px, block=1):
    """Each neuron covers the (2 block + 1)^2 pixels around its own; each pixel holds the
    largest value of the neurons covering it (0 if none)."""
    x, y = positions[:, ax_x], positions[:, ax_y]
    cols = np.floor((x - x.min()) / um_per_px).astype(int) + block
    rows = np.floor((y - y.min()) / um_per_px).astype(int) + block
    image = np.zeros((rows.max() + block + 1, cols.max() + block + 1), np.uint8)
    for r, c, v in zip(rows, cols, values):
        for dr in range(-block, block + 1):
            for dc in range(-block, block + 1):
                image[r + dr, c + dc] = max(image[r + dr, c + dc], v)
    return image
