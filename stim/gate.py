"""The quiescence gate: may a stimulation fire now, by the behaviour the loop can see.

At the rig the behaviour camera's bout detector (``rig.camera``: ``behaviour`` per camera
frame, meta ``moving`` = in a bout or the trace lost) knows within milliseconds whether the
fish moves, so once it has reported it alone gates; the decoder's ``moving`` per imaging
frame gates only where no camera runs; with neither, the gate is always open. A report is
believed only for a frame near the newest imaging frame (and camera times near its
acquisition time): one forged message with frame 1e9 can neither shut the gate for good
nor hold it open through a bout.
"""
from __future__ import annotations

CAMERA, DECODER, NONE = "camera", "decoder", "none"


class Gate:
    """Quiescence from the camera, else the decoder, else nothing (always quiet)."""

    def __init__(self, s):
        """s : ``stim.loop.LoopSettings`` (quiet_s, quiet_frames, max_camera_age_s,
        max_report_lag_frames)."""
        self.s = s
        self.source = NONE
        self.cam_t = -1  # newest camera frame time, ns (acquisition clock)
        self.cam_move_t = -1  # newest camera frame in a bout (or lost), ns
        self.dec_known = -1  # newest imaging frame the decoder reported
        self.dec_move = -1  # newest imaging frame decoded as moving
        self.rejected = 0

    def near(self, frame: int, newest: int) -> bool:
        """A report is believed only for frames near the newest imaging frame (none before
        the first frame: reports for frames the loop never saw are not counted)."""
        if newest < 0:
            return False
        ok = newest - self.s.max_report_lag_frames <= frame <= newest + 1
        self.rejected += not ok
        return ok

    def camera(self, t_ns: int, moving: bool, newest_t: int) -> None:
        """One camera frame's bout state at camera time ``t_ns``."""
        if t_ns > newest_t + 2 * 10 ** 9 or t_ns < newest_t - 10 * 10 ** 9:
            self.rejected += 1  # a camera clock far from the imaging clock: not believed
            return
        self.source = CAMERA
        self.cam_t = max(self.cam_t, t_ns)
        if moving:
            self.cam_move_t = max(self.cam_move_t, t_ns)

    def decoded(self, frame: int, moving: bool) -> None:
        if self.source == NONE:
            self.source = DECODER
        self.dec_known = max(self.dec_known, frame)
        if moving:
            self.dec_move = max(self.dec_move, frame)

    def quiet(self, newest_frame: int, newest_t: int) -> str:
        """"" when quiescent, else why not."""
        s = self.s
        if self.source == CAMERA:
            if self.cam_t < newest_t - s.max_camera_age_s * 1e9:
                return "camera stale"
            return "" if self.cam_t - self.cam_move_t >= s.quiet_s * 1e9 else "moving"
        if self.source == DECODER:
            return "" if self.dec_known - self.dec_move >= s.quiet_frames else "moving"
        return ""
