"""Shared fixtures.

Models: real photos (face-pairs, in the repository: tests/data/README.md),
the converted embedder weights (converted on first use; only a failed
download skips, a wrong hash fails), the detector and the embedder.

``stack``: the real services for the whole session. It starts a local stack
(``localstack.stack``) in a temporary home and points ``VIGIL_CONFIG`` at its
stack.yaml, so ``runtime.settings.load_settings()`` reaches it; or, when
``VIGIL_TEST_STACK`` names an existing stack.yaml (a ``vigil up`` already
running, or real Kafka/S3/Milvus), uses that and starts nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.settings import VigilSettings, default_weights_dir, load_settings
from synthetic.footage import face_pairs_dir

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
    from localstack import stack as local_stack

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


REPO = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = default_weights_dir()  # where set-up converted them
SAMPLES_DIR = REPO / "media" / "samples"


def load_rgb(path: Path, max_side: int | None = None) -> np.ndarray:
    """RGB uint8 array of an image file, optionally downscaled so its longer side is at most ``max_side``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            scale = max_side / max(im.size)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
        return np.array(im)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    # Few threads: the CI machines have 2 cores and torch collapses under load with more.
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("VIGIL_TEST_TORCH_THREADS", "1")))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def device() -> torch.device:
    from runtime.device import pick_device

    return pick_device(os.environ.get("VIGIL_TEST_DEVICE", "auto"))


@pytest.fixture(scope="session")
def face_pairs() -> Path:
    return face_pairs_dir()


@pytest.fixture(scope="session")
def people(face_pairs) -> dict[str, list[Path]]:
    """identity -> photo paths, in the order of identities.csv."""
    from synthetic.footage import identities as photo_identities

    return photo_identities(face_pairs)


@pytest.fixture(scope="session")
def identities(people) -> dict[str, list[str]]:
    """identity -> photo file names (relative to face-pairs), in the order of identities.csv."""
    return {person: [photo.name for photo in photos] for person, photos in people.items()}


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    from embed.weights import ensure_weights

    try:
        ensure_weights(WEIGHTS_DIR)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not download the FaceNet graph to convert: {exc}")
    return WEIGHTS_DIR


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The face_recognition sample photos (``synthetic.samples``), fetched if missing."""
    from synthetic.samples import fetch_samples

    try:
        fetch_samples(SAMPLES_DIR)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not download the sample photos: {exc}")
    return SAMPLES_DIR


@pytest.fixture
def stage_settings(stack, weights_dir) -> VigilSettings:
    """The stack's settings with the converted weights and a watchlist collection of this test's own."""
    settings = stack.settings
    settings.models.weights_dir = weights_dir
    settings.milvus.collection = f"test_{uuid.uuid4().hex[:8]}"
    return settings


@pytest.fixture(scope="session")
def detector(device):
    from detect.model import FaceDetector
    from runtime.settings import DetectSettings

    return FaceDetector(DetectSettings(), device)


@pytest.fixture(scope="session")
def embedder(weights_dir, device):
    from embed.model import FaceEmbedder

    return FaceEmbedder(weights_dir, device)
