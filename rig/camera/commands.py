"""``rig track VIDEO``: trace the tail in a video file, write angles, bouts and a contact sheet.

Kept light: heavy imports happen inside the command, so ``rig --help`` stays fast.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rig.argtypes import positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("track", help="trace the tail in a video file (h5/npy/tif stack or "
                                     "avi/mp4): angles, vigour, bouts, contact sheet",
                       description="Trace a head-restrained larva's tail in every frame of a "
                                   "file with the live camera's tracker and bout detector. "
                                   "Writes OUT/tail.csv (per frame), OUT/bouts.csv and "
                                   "OUT/contact_sheet.png (the trace drawn on frames spread "
                                   "over the file, to check by eye).")
    p.add_argument("video", metavar="VIDEO", help=".h5/.hdf5/.npy/.tif/.tiff stack or "
                                                  ".avi/.mp4/.mov/.mkv video")
    p.add_argument("--base", nargs=2, type=float, metavar=("X", "Y"),
                   help="tail base, pixels (where the tail leaves the body)")
    p.add_argument("--tip", nargs=2, type=float, metavar=("X", "Y"),
                   help="resting tail tip, pixels (sets the resting direction and length)")
    p.add_argument("--fps", type=positive_float, metavar="HZ",
                   help="camera rate (required for stacks; default: the video's own)")
    p.add_argument("--segments", type=positive_int, default=10, help="tail segments (10)")
    p.add_argument("--polarity", choices=("dark", "bright"), default="dark",
                   help="dark tail on a bright background (default) or bright on dark")
    p.add_argument("--smooth-degree", type=int, default=2, choices=range(6), metavar="0-5",
                   help="polynomial degree of the tail's direction along its length (2; 3-4 "
                        "follows S-shaped beats better on clean, high-contrast video)")
    p.add_argument("--dataset", help="HDF5 dataset (default: the only one, or 'video')")
    p.add_argument("--out", metavar="DIR", help="output folder (default: VIDEO's name + "
                                                "'-track', beside it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_track)


def _track(args) -> int:
    from rig.camera.sources import SourceError
    from rig.camera.track import track_file, write_outputs

    video = Path(args.video)
    out = Path(args.out) if args.out else video.with_name(video.stem + "-track")
    if args.base is None or args.tip is None:
        return _ask_for_points(video, out, args)
    try:
        tracked = track_file(video, args.base, args.tip, fps=args.fps, n_segments=args.segments,
                             polarity=args.polarity, smooth_degree=args.smooth_degree,
                             dataset=args.dataset,
                             progress=not args.no_progress)
    except (SourceError, ValueError) as exc:  # FrameError too: a base outside the frame
        print(f"rig track: {exc}", file=sys.stderr)
        return 2
    try:
        paths = write_outputs(tracked, out)
    except OSError as exc:
        print(f"rig track: cannot write to {out}: {exc.strerror or exc}; choose another --out",
              file=sys.stderr)
        return 2
    n, lost = len(tracked.lost), int(tracked.lost.sum())
    print(f"tracked {n} frames at {tracked.fps:g} Hz: {lost} lost ({100 * lost / n:.1f}%), "
          f"{len(tracked.bouts)} bouts")
    for what, path in paths.items():
        print(f"  {what:<6}{path}")
    return 0


def _ask_for_points(video: Path, out: Path, args) -> int:
    """No clicks given: write the first frame with a pixel grid to pick them on."""
    from rig.camera.sources import SourceError
    from rig.camera.track import first_frame_grid, open_file, write_png

    try:
        source, _, _ = open_file(video, args.fps or 1.0, args.dataset)
        try:
            frame = source.read()
        finally:
            source.close()
    except SourceError as exc:
        print(f"rig track: {exc}", file=sys.stderr)
        return 2
    if frame is None:
        print(f"rig track: {video.name}: holds no frames", file=sys.stderr)
        return 2
    path = out / "first_frame.png"
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_png(path, first_frame_grid(frame.image))
    except OSError as exc:
        print(f"rig track: cannot write to {out}: {exc.strerror or exc}; choose another --out",
              file=sys.stderr)
        return 2
    print(f"rig track: give --base X Y and --tip X Y (tail base and resting tail tip, pixels); "
          f"pick them on {path} (grid lines every 10 px, labelled every 50)", file=sys.stderr)
    return 2
