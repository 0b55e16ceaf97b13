"""Footage recording: packets remuxed (not re-encoded) into keyframe-aligned segments that play alone."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import av
import pytest

from ingest.recorder import SegmentRecorder
from ingest.source import sample_frames
from synthetic.footage import make_pattern_clip

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s of 320x240 at 10 fps, a keyframe every second (libx264 with B-frames)."""
    return make_pattern_clip(tmp_path_factory.mktemp("rec") / "clip.mp4", n_frames=40, fps=10, size=(320, 240))


def record(path, tmp_path, segment_s: float, target_fps: float = 5):
    segments = []
    sampler = sample_frames(str(path), target_fps, start_wallclock=T0)
    recorder = SegmentRecorder("cam", sampler, segment_s=segment_s, workdir=tmp_path, on_segment=segments.append)
    sampler.packet_sink = recorder.write
    frames = list(sampler)
    recorder.close()
    return segments, frames


def packet_digests(path) -> list[str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [hashlib.sha1(bytes(p)).hexdigest() for p in container.demux(stream) if p.size]


def decoded(path) -> tuple[list[float], bool]:
    """PTS (seconds) of every frame, and whether the first packet is a keyframe."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first_key = next(p for p in container.demux(stream) if p.size).is_keyframe
        container.seek(0)
        return [float(f.pts * stream.time_base) for f in container.decode(stream)], first_key


def test_segments_are_keyframe_aligned_contiguous_and_play_alone(clip, tmp_path):
    segments, frames = record(clip, tmp_path, segment_s=1.0)
    assert len(frames) == 20  # sampling is untouched by recording
    assert [(s.start - T0).total_seconds() for s in segments] == [0.0, 1.0, 2.0, 3.0]
    assert [(s.end - T0).total_seconds() for s in segments] == [1.0, 2.0, 3.0, 4.0]
    for segment in segments:
        pts, first_key = decoded(segment.path)
        assert first_key and segment.packets == 10
        assert pts == pytest.approx([0.1 * k for k in range(10)])


def test_segments_are_remuxed_not_reencoded(clip, tmp_path):
    segments, _ = record(clip, tmp_path, segment_s=1.0)
    recorded = [digest for segment in segments for digest in packet_digests(segment.path)]
    assert recorded == packet_digests(clip)


def test_a_segment_is_cut_at_the_first_keyframe_after_its_length(clip, tmp_path):
    segments, _ = record(clip, tmp_path, segment_s=2.5)
    assert [((s.start - T0).total_seconds(), (s.end - T0).total_seconds()) for s in segments] == [(0.0, 3.0), (3.0, 4.0)]


def test_frames_map_into_their_segment(clip, tmp_path):
    segments, frames = record(clip, tmp_path, segment_s=1.0)
    for frame in frames:
        holding = [s for s in segments if s.start <= frame.source_ts < s.end]
        assert len(holding) == 1
        offset = (frame.source_ts - holding[0].start).total_seconds()
        pts, _ = decoded(holding[0].path)
        assert min(abs(p - offset) for p in pts) < 1e-3
    assert segments[-1].end == T0 + timedelta(seconds=4)
