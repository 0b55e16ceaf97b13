from datetime import datetime, timedelta, timezone

from match.decision import AlertGate, alert_id

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_alert_id_is_deterministic_and_distinct():
    assert alert_id("face-1", "alice") == alert_id("face-1", "alice")
    assert alert_id("face-1", "alice") != alert_id("face-1", "bob")
    assert alert_id("face-1", "alice") != alert_id("face-2", "alice")


def test_gate_suppresses_within_cooldown_per_camera_and_person():
    gate = AlertGate(cooldown_s=30)
    key = (None, "cam-a", "alice")
    assert gate.is_open(key, T0)
    gate.record(key, T0)
    assert not gate.is_open(key, T0 + timedelta(seconds=29))
    assert gate.is_open(key, T0 + timedelta(seconds=30))
    assert gate.is_open((None, "cam-b", "alice"), T0)  # another camera
    assert gate.is_open(("replay-1", "cam-a", "alice"), T0)  # another run


def test_gate_open_until_recorded():
    # A batch that fails after the check must be able to raise the alert on retry.
    gate = AlertGate(cooldown_s=30)
    key = (None, "cam-a", "alice")
    assert gate.is_open(key, T0) and gate.is_open(key, T0)
