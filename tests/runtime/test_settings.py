from pathlib import Path

import pytest
from pydantic import ValidationError

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


def test_an_unknown_key_in_a_yaml_file_is_named_with_its_section(no_config, monkeypatch, tmp_path):
    config = tmp_path / "vigil.yaml"
    config.write_text("match:\n  threshhold: 0.6\n")
    monkeypatch.setenv("VIGIL_CONFIG", str(config))
    with pytest.raises(ValidationError, match="unknown setting 'threshhold' in section 'match'"):
        load_settings()


def test_an_unknown_key_in_the_environment_is_named_with_its_section(no_config, monkeypatch):
    monkeypatch.setenv("VIGIL_MATCH__THRESHHOLD", "0.6")
    with pytest.raises(ValidationError, match="unknown setting 'threshhold' in section 'match'"):
        load_settings()


def test_an_unknown_key_in_arguments_is_named_with_its_section(no_config):
    with pytest.raises(ValidationError, match="unknown setting 'threshhold' in section 'match'"):
        load_settings(match={"threshhold": 0.6})
    with pytest.raises(ValidationError, match="unknown setting 'fps' in section 'ingest.cameras.0'"):
        load_settings(ingest={"cameras": [{"id": "lobby", "url": "rtsp://cam/1", "fps": 2}]})
    with pytest.raises(ValidationError, match="unknown setting 'sharpness' in section 'detect.quality.per_camera.lobby'"):
        load_settings(detect={"quality": {"per_camera": {"lobby": {"sharpness": 3}}}})


def test_an_unknown_section_is_an_error_from_every_source(no_config, monkeypatch, tmp_path):
    with pytest.raises(ValidationError, match="unknown settings section 'mach'"):
        load_settings(mach={"threshold": 0.6})
    monkeypatch.setenv("VIGIL_MACH__THRESHOLD", "0.6")  # pydantic-settings alone would skip it silently
    with pytest.raises(ValidationError, match="unknown settings section 'mach'"):
        load_settings()
    monkeypatch.delenv("VIGIL_MACH__THRESHOLD")
    config = tmp_path / "vigil.yaml"
    config.write_text("mach:\n  threshold: 0.6\n")
    monkeypatch.setenv("VIGIL_CONFIG", str(config))
    with pytest.raises(ValidationError, match="unknown settings section 'mach'"):
        load_settings()


def test_other_vigil_variables_are_not_settings(no_config, monkeypatch, tmp_path):
    for name in ("VIGIL_HOME", "VIGIL_OPERATOR", "VIGIL_TEST_STACK", "VIGIL_OPENCV_PYTHON",
                 "VIGIL_TEST_TORCH_THREADS", "VIGIL_TEST_DEVICE", "VIGIL_RUN_ID", "VIGIL_INGEST_REPORT"):
        monkeypatch.setenv(name, str(tmp_path))
    assert load_settings().ingest.run_id is None


def test_errors_leave_values_out(no_config, monkeypatch):
    monkeypatch.setenv("VIGIL_KAFKA__SASL_PASSWROD", "hunter2")
    with pytest.raises(ValidationError) as err:
        load_settings()
    assert "sasl_passwrod" in str(err.value) and "hunter2" not in str(err.value)


def test_secrets_are_masked_until_a_client_unwraps_them(no_config, monkeypatch):
    monkeypatch.setenv("VIGIL_S3__SECRET_KEY", "s3-secret")
    monkeypatch.setenv("VIGIL_MILVUS__TOKEN", "root:milvus-secret")
    settings = load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                                    "sasl_username": "u", "sasl_password": "kafka-secret"})
    shown = settings.model_dump_json() + repr(settings)
    assert not any(secret in shown for secret in ("s3-secret", "milvus-secret", "kafka-secret"))
    assert settings.s3.secret_key.get_secret_value() == "s3-secret"
    assert settings.milvus.token.get_secret_value() == "root:milvus-secret"
    assert settings.kafka.sasl_password.get_secret_value() == "kafka-secret"


def test_weights_default_to_the_user_cache(no_config, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert load_settings().models.weights_dir == tmp_path / "cache" / "vigil" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings().models.weights_dir == tmp_path / "home" / ".cache" / "vigil" / "models"
    monkeypatch.setenv("VIGIL_MODELS__WEIGHTS_DIR", "my/models")
    assert load_settings().models.weights_dir == Path("my/models")  # a relative path stays as given


def test_ingest_run_options_are_settings(no_config, monkeypatch, tmp_path):
    monkeypatch.setenv("VIGIL_INGEST__RUN_ID", "run-1")
    monkeypatch.setenv("VIGIL_INGEST__REPORT_PATH", str(tmp_path / "report.json"))
    ingest = load_settings().ingest
    assert (ingest.run_id, ingest.report_path) == ("run-1", tmp_path / "report.json")
