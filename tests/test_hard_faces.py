"""Hard faces for the bench and the pre-rendered synthetic source the demo plays."""

from __future__ import annotations

import numpy as np
import pytest

from capture import open_source
from capture.hard_faces import CASES, hard_case
from capture.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def backgrounds() -> list:
    src = SyntheticSource(pace="fast", n_frames=3)
    src.open()
    return [src.read() for _ in range(3)]


@pytest.mark.parametrize("case", CASES)
def test_hard_case_has_faces_with_truth_inside_the_frame(case: str, backgrounds: list) -> None:
    frames, truth = hard_case(case, backgrounds)
    assert len(frames) == len(truth) == 3
    expected = {"crowd": 20, "small_10_40": 6}.get(case, 4)
    for f, boxes, bg in zip(frames, truth, backgrounds, strict=True):
        assert len(boxes) >= expected, (case, len(boxes))
        b = np.array(boxes)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 640).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 480).all()
        assert not np.array_equal(f.color, bg.color)  # faces were pasted; the background was not modified
    widths = np.array(truth[0])[:, 2] - np.array(truth[0])[:, 0]
    if case == "small_10_40":
        assert 9 <= widths.min() <= 12 and 36 <= widths.max() <= 42
    if case == "crowd":
        assert widths.min() < 20


def test_unknown_hard_case_is_a_clear_error(backgrounds: list) -> None:
    with pytest.raises(ValueError, match="hard case: expected one of"):
        hard_case("upside_down", backgrounds)


def test_prerendered_source_plays_forth_and_back() -> None:
    src = open_source("synthetic", pace="fast", n_frames=9, prerender=4, width=64, height=48)
    src.open()
    assert len(src._cache) == 4  # rendered before the clock starts
    frames = [src.read() for _ in range(9)]
    assert [f.seq for f in frames] == list(range(9))
    order = [src.loop_index(i) for i in range(9)]
    assert order == [0, 1, 2, 3, 2, 1, 0, 1, 2]  # continuous path: no jump back to the start
    assert np.array_equal(frames[1].color, frames[5].color)
    assert frames[2].attachments["truth"] is frames[4].attachments["truth"]


def test_prerendered_source_lets_the_renderer_go_and_still_renders_on_demand() -> None:
    src = open_source("synthetic", pace="fast", n_frames=6, prerender=3, width=64, height=48)
    src.open()
    assert src._renderer is None  # every frame cached: the renderer is not kept while they play
    frames = [src.read() for _ in range(6)]
    assert src._renderer is None and len(src._cache) == 3  # reading never renders again
    live = SyntheticSource(64, 48, pace="fast").render(1)  # the same scene rendered without a cache
    assert np.array_equal(frames[1].color, live[0]) and np.array_equal(frames[1].depth, live[1])
    again = src.render(2)  # asked for a frame: the renderer comes back
    assert np.array_equal(again[0], frames[2].color)
