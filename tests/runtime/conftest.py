import os

import pytest


@pytest.fixture
def no_config(monkeypatch, tmp_path):
    """No VIGIL_* variable and an empty config file: the defaults plus what a test sets."""
    for key in list(os.environ):
        if key.startswith("VIGIL_"):
            monkeypatch.delenv(key)
    (tmp_path / "empty.yaml").write_text("")
    monkeypatch.setenv("VIGIL_CONFIG", str(tmp_path / "empty.yaml"))
