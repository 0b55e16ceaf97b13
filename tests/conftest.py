"""Shared fixtures.

``stack``: the real services for the whole session. It starts a local stack
(``vigil.stack``) in a temporary home and points ``VIGIL_CONFIG`` at its
stack.yaml, so ``runtime.settings.load_settings()`` reaches it; or, when
``VIGIL_TEST_STACK`` names an existing stack.yaml (a ``vigil up`` already
running, or real Kafka/S3/Milvus), uses that and starts nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.settings import VigilSettings, load_settings

@dataclass
class TestStack:
    """The session's services: ``settings`` reads them afresh each time."""

    __test__ = False  # not a test class

    config: Path
    home: Path | None  # None when VIGIL_TEST_STACK names services started elsewhere
    info: dict | None
    startup_s: float | None

    @property
    def settings(self) -> VigilSettings:
        return load_settings()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> TestStack:
    from vigil import stack as local_stack

    previous = os.environ.get("VIGIL_CONFIG")
    existing = os.environ.get("VIGIL_TEST_STACK")
    if existing:
        config = Path(existing).resolve()
        if not config.is_file():
            pytest.fail(f"VIGIL_TEST_STACK={existing} is not a file")
        home, info, startup_s = None, None, None
    else:
        home = tmp_path_factory.mktemp("vigil-home")
        t0 = time.monotonic()
        info = local_stack.up(home)
        startup_s = time.monotonic() - t0
        config = Path(info["config"])
    os.environ["VIGIL_CONFIG"] = str(config)
    try:
        yield TestStack(config=config, home=home, info=info, startup_s=startup_s)
    finally:
        if previous is None:
            os.environ.pop("VIGIL_CONFIG", None)
        else:
            os.environ["VIGIL_CONFIG"] = previous
        if home is not None:
            local_stack.down(home)


@pytest.fixture(scope="session")
def settings(stack) -> VigilSettings:
    return stack.settings

