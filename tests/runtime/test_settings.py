from runtime.settings import load_settings


def test_env_beats_yaml_file_beats_defaults(tmp_path, monkeypatch):
    config = tmp_path / "vigil.yaml"
    config.write_text("kafka:\n  bootstrap: file:9092\nmatch:\n  threshold: 0.6\n  min_track_faces: 5\n")
    monkeypatch.setenv("VIGIL_CONFIG", str(config))
    monkeypatch.setenv("VIGIL_MATCH__THRESHOLD", "0.7")
    settings = load_settings()
    assert settings.kafka.bootstrap == "file:9092"
    assert settings.match.threshold == 0.7  # env wins
    assert settings.match.min_track_faces == 5  # file fills the rest of the section
    assert settings.detect.crop_size == 160  # defaults stay


def test_cameras_from_env_json(monkeypatch, tmp_path):
    monkeypatch.setenv("VIGIL_CONFIG", str(tmp_path / "none.yaml") + ":")
    (tmp_path / "none.yaml").write_text("")
    monkeypatch.setenv("VIGIL_INGEST__CAMERAS", '[{"id": "lobby", "url": "rtsp://cam/1", "target_fps": 2}]')
    cameras = load_settings().ingest.cameras
    assert [(c.id, c.url, c.target_fps) for c in cameras] == [("lobby", "rtsp://cam/1", 2.0)]
