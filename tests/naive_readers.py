"""Plain, slow references and test doubles for the acquisition readers.

``GrowingTiff`` writes a BigTIFF the way acquisition software does (pixels, then the IFD,
then the previous IFD's next pointer patched), optionally with a ScanImage header, and can
leave a page half written. The ``naive_*`` functions are the obvious loops that the fast
ROI code is checked against.
"""
import json
import struct

import numpy as np


class GrowingTiff:
    def __init__(self, path, scanimage: dict | None = None, rois: dict | None = None):
        self.path = path
        self.f = open(path, "wb")
        self.f.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))  # first IFD pointer: 0 for now
        self.ptr_at = 8
        if scanimage is not None:
            text = "\n".join(f"{k} = {v}" for k, v in scanimage.items()).encode() + b"\0"
            roi = json.dumps(rois or {}).encode()
            self.f.write(struct.pack("<IIII", 0x07030301, 3, len(text), len(roi)) + text + roi)
        self.pending = None
        self.f.flush()

    def append(self, image: np.ndarray, description: str = "", pixels: bool = True) -> None:
        """One page; with ``pixels=False`` the IFD is linked before its pixels are written."""
        f = self.f
        f.seek(0, 2)
        desc = description.encode() + b"\0"
        desc_at = f.tell()
        f.write(desc)
        image = np.ascontiguousarray(image)
        H, W = image.shape
        n_entries = 11
        ifd_size = 8 + 20 * n_entries + 8
        if pixels:  # pixels, then the IFD
            data_at, ifd_at = f.tell(), f.tell() + image.nbytes
        else:  # the IFD first, its pixels to follow: the file ends before them for a while
            ifd_at, data_at = f.tell(), f.tell() + ifd_size
        entries = [(256, 4, 1, W), (257, 4, 1, H), (258, 3, 1, image.dtype.itemsize * 8),
                   (259, 3, 1, 1), (262, 3, 1, 1), (270, 2, len(desc), desc_at),
                   (273, 16, 1, data_at), (277, 3, 1, 1), (278, 4, 1, H),
                   (279, 16, 1, image.nbytes),
                   (339, 3, 1, 3 if image.dtype.kind == "f" else 1)]
        assert len(entries) == n_entries
        ifd = struct.pack("<Q", len(entries))
        for code, typ, count, value in entries:
            ifd += struct.pack("<HHQQ", code, typ, count, value)
        next_at = ifd_at + len(ifd)
        ifd += struct.pack("<Q", 0)
        if pixels:
            f.write(image.tobytes())
            f.write(ifd)
        else:
            f.write(ifd)
            self.pending = (data_at, image.tobytes())
        f.seek(self.ptr_at)
        f.write(struct.pack("<Q", ifd_at))  # link it last, as a writer does
        self.ptr_at = next_at
        f.flush()

    def finish_pending(self) -> None:
        at, data = self.pending
        self.f.seek(at)
        self.f.write(data)
        self.f.flush()
        self.pending = None

    def close(self):
        self.f.close()


def naive_extract(frame, cells, keep, boxes, shift, neuropil=0.7):
    """F − neuropil·Fneu of each cell by plain loops (frame read at the shifted pixel)."""
    H, W = frame.shape
    dy, dx = shift
    shifted = frame[np.clip(np.arange(H) + dy, 0, H - 1)][:, np.clip(np.arange(W) + dx, 0, W - 1)]
    shifted = shifted.astype(np.float64)
    out = []
    for (ys, xs, w), box in zip(cells, boxes):
        f = np.sum(w * shifted[ys, xs]) / np.sum(w)
        ring = np.zeros((H, W), dtype=bool)
        oy0, oy1, ox0, ox1, iy0, iy1, ix0, ix1 = box
        ring[oy0:oy1, ox0:ox1] = True
        ring[iy0:iy1, ix0:ix1] = False
        ring &= keep.astype(bool)
        fneu = shifted[ring].mean()
        out.append(f - neuropil * fneu)
    return np.array(out)


def naive_best_shift(frame, reference, window, max_shift):
    """The integer shift maximising the plain correlation of the centred crops."""
    ref = reference[window].astype(np.float64)
    ref -= ref.mean()
    H, W = frame.shape
    best, arg = -np.inf, (0, 0)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            ys = np.clip(np.arange(window[0].start, window[0].stop) + dy, 0, H - 1)
            xs = np.clip(np.arange(window[1].start, window[1].stop) + dx, 0, W - 1)
            crop = frame[ys][:, xs].astype(np.float64)
            score = np.sum((crop - crop.mean()) * ref)
            if score > best:
                best, arg = score, (dy, dx)
    return arg


def naive_maximin(f, rate_hz, window_s=60.0, smooth_s=0.33, blocks=30, floor=1.0):
    """ΔF/F with the causal maximin baseline, by explicit windows over (T, N) F."""
    f = np.asarray(f, dtype=np.float64)
    T = len(f)
    B = max(1, int(round(window_s * rate_hz / blocks)))
    alpha = 1.0 - np.exp(-1.0 / (smooth_s * rate_hz))
    smooth = np.empty_like(f)
    smooth[0] = f[0]
    for t in range(1, T):
        smooth[t] = smooth[t - 1] + alpha * (f[t] - smooth[t - 1])
    m = np.empty_like(f)
    base = np.empty_like(f)
    for t in range(T):
        start = max(0, (t // B) * B - blocks * B)  # the last `blocks` whole blocks + this one
        m[t] = smooth[start:t + 1].min(axis=0)
        base[t] = m[start:t + 1].max(axis=0)
    return (f - base) / np.maximum(np.abs(base), floor)
