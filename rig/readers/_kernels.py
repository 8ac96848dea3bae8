"""numba kernels of the acquisition readers: compute only, allocate nothing; inputs are
checked by the calling class (``rig.readers.roi``)."""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def cell_sums(frame, indptr, ys, xs, weights, dy, dx, out):
    """out[r] = sum of weights * frame[y + dy, x + dx] over the pixels of ROI r.

    frame (H, W) any numeric dtype; indptr (R + 1,) int64 CSR row starts; ys, xs (nnz,)
    int32 pixel coordinates; weights (nnz,) float32; out (R,) float32. A pixel shifted off
    the frame reads the nearest edge pixel (motion moves a cell to the border, not away).
    """
    H, W = frame.shape
    for r in range(len(indptr) - 1):
        acc = np.float32(0.0)
        for k in range(indptr[r], indptr[r + 1]):
            y = min(max(ys[k] + dy, 0), H - 1)
            x = min(max(xs[k] + dx, 0), W - 1)
            acc += weights[k] * np.float32(frame[y, x])
        out[r] = acc


@njit(cache=True, nogil=True)
def masked_integral(frame, keep, dy, dx, sat):
    """Summed-area table of frame[y + dy, x + dx] * keep[y, x] (edge-clamped shift).

    keep (H, W) float32 (1 outside cells); sat (H + 1, W + 1) float64, row/col 0 stay 0.
    float64 because 512 x 512 pixels of 16-bit values overflow float32's exact range.
    """
    H, W = frame.shape
    for y in range(H):
        sy = min(max(y + dy, 0), H - 1)
        row = 0.0
        for x in range(W):
            sx = min(max(x + dx, 0), W - 1)
            row += frame[sy, sx] * keep[y, x]
            sat[y + 1, x + 1] = sat[y, x + 1] + row


@njit(cache=True, nogil=True)
def ring_means(sat, boxes, counts, out):
    """Mean over the square ring of each ROI: outer box minus inner box, from a SAT.

    boxes (R, 8) int32: outer y0 y1 x0 x1, inner y0 y1 x0 x1 (half-open); counts (R,)
    float32 kept pixels in each ring; out (R,) float32.
    """
    for r in range(len(counts)):
        oy0, oy1, ox0, ox1 = boxes[r, 0], boxes[r, 1], boxes[r, 2], boxes[r, 3]
        iy0, iy1, ix0, ix1 = boxes[r, 4], boxes[r, 5], boxes[r, 6], boxes[r, 7]
        outer = sat[oy1, ox1] - sat[oy0, ox1] - sat[oy1, ox0] + sat[oy0, ox0]
        inner = sat[iy1, ix1] - sat[iy0, ix1] - sat[iy1, ix0] + sat[iy0, ix0]
        out[r] = (outer - inner) / counts[r] if counts[r] > 0 else np.float32(0.0)


@njit(cache=True, nogil=True)
def peak_in_window(corr, max_shift):
    """(dy, dx) of the largest value of a circular cross-correlation within ±max_shift."""
    H, W = corr.shape
    best = -np.inf
    by = 0
    bx = 0
    for sy in range(-max_shift, max_shift + 1):
        y = sy % H
        for sx in range(-max_shift, max_shift + 1):
            v = corr[y, sx % W]
            if v > best:
                best = v
                by = sy
                bx = sx
    return by, bx
