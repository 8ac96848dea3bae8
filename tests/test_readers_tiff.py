"""Following TIFF files while an acquisition program writes them."""
import numpy as np
import pytest
import tifffile

from naive_readers import GrowingTiff
from rig.readers import ReaderError
from rig.readers.tiff import FramesStopped, TiffFollower, frame_time_ns

pytestmark = pytest.mark.timeout(30)


def frames(n, shape=(16, 24), seed=0):
    return np.random.default_rng(seed).integers(0, 4000, (n, *shape), dtype=np.uint16)


def test_frames_are_read_as_they_are_written_and_a_stop_is_reported(tmp_path):
    data = frames(5)
    writer = GrowingTiff(tmp_path / "run.tif")
    follower = TiffFollower(tmp_path / "run.tif", shape=(16, 24), timeout_s=0.1)
    for image in data[:3]:
        writer.append(image)
    got = [follower.next_frame().image for _ in range(3)]
    np.testing.assert_array_equal(got, data[:3])
    writer.append(data[3])
    np.testing.assert_array_equal(follower.next_frame().image, data[3])
    with pytest.raises(FramesStopped, match=r"run\.tif: no new frame for 0\.1 s after 4 "
                                            r"frame\(s\): has acquisition stopped"):
        follower.next_frame()
    writer.append(data[4])  # acquisition resumes: the follower goes on where it was
    np.testing.assert_array_equal(follower.next_frame().image, data[4])
    writer.close()
    follower.close()


def test_a_page_linked_before_its_pixels_are_written_is_waited_for(tmp_path):
    data = frames(2)
    writer = GrowingTiff(tmp_path / "run.tif")
    follower = TiffFollower(tmp_path / "run.tif", timeout_s=0.05)
    writer.append(data[0])
    writer.append(data[1], pixels=False)
    follower.next_frame()
    with pytest.raises(FramesStopped):
        follower.next_frame()
    writer.finish_pending()
    np.testing.assert_array_equal(follower.next_frame().image, data[1])


def test_a_numbered_series_is_followed_file_after_file(tmp_path):
    data = frames(4)
    first = GrowingTiff(tmp_path / "fish_00001.tif")
    first.append(data[0])
    first.append(data[1])
    follower = TiffFollower(tmp_path, timeout_s=0.1)
    assert [follower.next_frame().index for _ in range(2)] == [0, 1]
    second = GrowingTiff(tmp_path / "fish_00002.tif")
    second.append(data[2])
    second.append(data[3])
    got = [follower.next_frame() for _ in range(2)]
    np.testing.assert_array_equal([p.image for p in got], data[2:])
    assert got[0].meta["file"].endswith("fish_00002.tif")


def test_scanimage_header_sets_channels_and_frame_times(tmp_path):
    si = {"SI.hChannels.channelSave": "[1;2]", "SI.hRoiManager.scanVolumeRate": "7.5",
          "SI.hStackManager.numSlices": "1"}
    writer = GrowingTiff(tmp_path / "si.tif", scanimage=si, rois={"RoiGroups": {}})
    data = frames(6)
    for k, image in enumerate(data):  # channels interleaved: pages 0, 2, 4 are channel 1
        t = (k // 2) / 7.5
        writer.append(image, f"frameNumbers = {k // 2 + 1}\nframeTimestamps_sec = {t:.6f}\n"
                             "epoch = [2026 11 25 18 0 1.5]")
    follower = TiffFollower(tmp_path / "si.tif", channel=1, timeout_s=0.1)
    pages = [follower.next_frame() for _ in range(3)]
    assert follower.channels == 2 and follower.rate_hz == 7.5
    np.testing.assert_array_equal([p.image for p in pages], data[1::2])
    assert pages[2].meta["frameNumbers"] == 3
    start = 1795629601_500_000_000  # 2026-11-25 18:00:01.5 UTC
    assert [p.index for p in pages] == [0, 1, 2]  # frames of channel 1, not pages
    assert pages[0].t_acq_ns == frame_time_ns(pages[0].meta) == start
    assert pages[2].t_acq_ns == start + round(2 / 7.5 * 1e9 / 1000) * 1000


def test_channel_count_given_overrides_a_wrong_header(tmp_path):
    writer = GrowingTiff(tmp_path / "si.tif", scanimage={"SI.hChannels.channelSave": "[1;2]",
                                                         "SI.hStackManager.numSlices": "1"})
    data = frames(3)
    for image in data:
        writer.append(image)
    follower = TiffFollower(tmp_path / "si.tif", channels=1, timeout_s=0.1)
    np.testing.assert_array_equal([follower.next_frame().image for _ in range(3)], data)


def test_a_stack_written_by_tifffile_is_read(tmp_path):
    data = frames(4, (8, 8))
    tifffile.imwrite(tmp_path / "mm.tif", data, photometric="minisblack")  # classic TIFF
    follower = TiffFollower(tmp_path / "mm.tif", timeout_s=0.1)
    np.testing.assert_array_equal([follower.next_frame().image for _ in range(4)], data)
    tifffile.imwrite(tmp_path / "big.tif", data.astype(np.float32), bigtiff=True,
                     photometric="minisblack")
    follower = TiffFollower(tmp_path / "big.tif", timeout_s=0.1)
    assert follower.next_frame().image.dtype == np.float32


def test_a_frame_of_the_wrong_size_names_file_and_sizes(tmp_path):
    tifffile.imwrite(tmp_path / "small.tif", frames(1, (8, 8)))
    follower = TiffFollower(tmp_path / "small.tif", shape=(512, 512), timeout_s=0.1)
    with pytest.raises(ReaderError, match=r"small\.tif page 0: 8 x 8 pixels, expected 512 x "
                                          r"512"):
        follower.next_frame()


def test_a_compressed_tiff_is_refused_with_the_fix(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", frames(1, (8, 8)), compression="zlib")
    with pytest.raises(ReaderError, match=r"z\.tif .*compressed page.*write uncompressed"):
        TiffFollower(tmp_path / "z.tif", timeout_s=0.1).next_frame()


def test_a_file_that_is_not_tiff_is_named(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"GIF89a" + bytes(20))
    with pytest.raises(ReaderError, match=r"x\.tif: not a TIFF file"):
        TiffFollower(tmp_path / "x.tif", timeout_s=0.1).next_frame()


def test_no_file_yet_times_out_with_the_path(tmp_path):
    with pytest.raises(FramesStopped, match="no TIFF file found yet"):
        TiffFollower(tmp_path / "*.tif", timeout_s=0.05).next_frame()


def test_cancel_from_another_thread_ends_a_long_wait(tmp_path):
    import threading

    from rig.readers import ReaderCancelled

    follower = TiffFollower(tmp_path / "*.tif", timeout_s=10.0)
    cancelled = threading.Event()

    def cancel():
        cancelled.set()  # before the reader can see the cancel and raise
        follower.cancel()

    threading.Timer(0.05, cancel).start()
    with pytest.raises(ReaderCancelled):  # its 10 s timeout would raise FramesStopped
        follower.next_frame()
    # the wait ended because of the cancel, whatever the load: no bound on the time it took
    assert cancelled.is_set()
