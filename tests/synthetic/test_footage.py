"""synthetic.footage: synthetic footage from real face photos decodes to its ground truth."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from ingest.source import sample_frames
from synthetic.footage import Scene, default_scenes, identities, make_footage

FPS = 10
SIZE = (640, 360)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    scenes = default_scenes(3, frames_per_scene=15, gap_frames=5)
    return make_footage(tmp_path_factory.mktemp("footage") / "faces.mp4", scenes, fps=FPS, size=SIZE, seed=7)


def test_identities_are_read():
    people = identities()
    assert len(people) == 13 and sum(len(p) for p in people.values()) == 61
    assert all(path.is_file() for paths in people.values() for path in paths)


def test_truth_ranges(footage):
    assert [s.label for s in footage.scenes] == ["person-01", None, "person-02", None, "person-03"]
    assert [(s.first_frame, s.end_frame) for s in footage.scenes] == [(0, 15), (15, 20), (20, 35), (35, 40), (40, 55)]
    assert footage.n_frames == 55 and footage.duration_s == pytest.approx(5.5)
    assert footage.scenes[2].start_s == pytest.approx(2.0) and footage.scenes[2].end_s == pytest.approx(3.5)
    assert footage.label_at_frame(14) == "person-01" and footage.label_at_frame(15) is None
    assert footage.label_at(4.05) == "person-03" and footage.label_at(99) is None
    for scene in footage.scenes:
        if scene.label is None:
            assert scene.boxes == ()
            continue
        assert len(scene.boxes) == scene.end_frame - scene.first_frame
        heights = {y2 - y1 for _, y1, _, y2 in scene.boxes}
        assert len(heights) == 1 and 0.44 * SIZE[1] <= heights.pop() <= 0.61 * SIZE[1]
        assert all(0 <= x1 < x2 <= SIZE[0] and 0 <= y1 < y2 <= SIZE[1] for x1, y1, x2, y2 in scene.boxes)
        assert scene.boxes[0][0] != scene.boxes[-1][0]  # it moves across the frame
    assert json.loads(footage.to_json())["path"] == "faces.mp4"


def test_decodes_to_the_expected_frames(footage):
    with av.open(str(footage.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == SIZE
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == footage.n_frames
    for index in (5, 17, 27):
        scene = footage.scene_at_frame(index)
        img = frames[index].astype(np.int16)
        if scene.label is None:  # background only: smooth everywhere
            assert np.abs(np.diff(img, axis=1)).mean() < 2
        else:  # the photo is where the truth says, the background around it is smooth
            x1, y1, x2, y2 = scene.box_at(index)
            texture = np.abs(np.diff(img, axis=1)).mean(axis=2)  # (H, W-1)
            outside = np.ones_like(texture, dtype=bool)
            outside[max(0, y1 - 4):y2 + 4, max(0, x1 - 4):x2 + 4] = False
            assert texture[y1:y2, x1:x2 - 1].mean() > 3 * max(0.5, texture[outside].mean())


def test_sampled_frames_map_to_truth(footage):
    frames = list(sample_frames(str(footage.path), 5))
    assert len(frames) == 28  # 5.5 s at 5 fps
    labels = [footage.label_at(f.pts_s) for f in frames]
    assert labels[:8] == ["person-01"] * 8 and labels[8:10] == [None, None] and labels[10] == "person-02"


def test_deterministic(tmp_path):
    photo = identities()["person-04"][0]
    scenes = [Scene(photo, 6, "person-04")]
    a = make_footage(tmp_path / "a.mp4", scenes, fps=FPS, size=(320, 180), seed=3)
    b = make_footage(tmp_path / "b.mp4", scenes, fps=FPS, size=(320, 180), seed=3)
    c = make_footage(tmp_path / "c.mp4", scenes, fps=FPS, size=(320, 180), seed=4)
    assert a.path.read_bytes() == b.path.read_bytes() and a.scenes == b.scenes
    assert a.path.read_bytes() != c.path.read_bytes()
