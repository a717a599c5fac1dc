"""A looped replay of a TUM-layout folder (the bench's fixture): decoded once, same frames every pass."""

import numpy as np
import pytest

from bench._tum_fixture import write_synthetic_tum
from capture import open_source, tum
from capture.replay import ReplaySource


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic_tum(tmp_path_factory.mktemp("tum"), frames=4, width=160, height=120)


def test_fixture_is_a_tum_folder_played_forth_and_back(folder):
    stamps, names = tum.read_list(folder / "rgb.txt")
    assert names == ["rgb/00000.png", "rgb/00001.png", "rgb/00002.png", "rgb/00003.png", "rgb/00002.png",
                     "rgb/00001.png"]
    assert np.all(np.diff(stamps) > 0)
    gt_t, gt = tum.read_groundtruth(folder / "groundtruth.txt")
    assert len(gt_t) == 6 and np.allclose(gt[1], gt[5], atol=1e-5)  # frame 1 on the way back: same pose
    intr, scale = tum.read_camera_json(folder / "camera.json")
    assert (intr.width, intr.height, scale) == (160, 120, tum.TUM_DEPTH_SCALE)


def test_looped_replay_decodes_each_file_once_and_repeats_it_exactly(folder):
    src = open_source(f"replay:{folder}", pace="fast", loop=True, n_frames=15, replay_cache_mb=8)
    frames = [src.read() for _ in range(15)]
    assert src.read() is None  # n_frames bounds the loop
    assert [f.seq for f in frames] == list(range(15))
    assert src.cache_hits == 15 - 4  # 4 distinct images; the rest from the cache
    assert np.array_equal(frames[1].color, frames[5].color) and np.array_equal(frames[0].depth, frames[6].depth)
    with pytest.raises(ValueError):  # stages must copy on write: a cached frame is read-only
        frames[7].color[0, 0] = 0


def test_replay_cache_budget_and_off(folder):
    fresh = ReplaySource(folder, pace="fast", loop=True, n_frames=12, cache_mb=0)
    frames = [fresh.read() for _ in range(12)]
    assert fresh.cache_hits == 0 and frames[0].color.flags.writeable
    once = ReplaySource(folder, pace="fast", loop=False, cache_mb=64)  # no loop: nothing would be read again
    while once.read() is not None:
        pass
    assert once.cache_hits == 0
