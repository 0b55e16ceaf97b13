"""Where the models run: device choice and torch's CPU thread count."""

from __future__ import annotations

import logging

import torch

from runtime.settings import ModelSettings

log = logging.getLogger(__name__)


def pick_device(setting: str = "auto") -> torch.device:
    """``auto`` picks CUDA when it is available, else the CPU; ``cuda`` fails
    loudly when there is no GPU rather than silently running on the CPU."""
    setting = (setting or "auto").strip().lower()
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {setting!r} requested but CUDA is not available")
        return torch.device(setting)
    raise ValueError(f"unknown device setting {setting!r} (expected auto, cpu or cuda)")


def apply_torch_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; None leaves torch's default."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def device_from_settings(models: ModelSettings) -> torch.device:
    """Apply ``ModelSettings.torch_threads`` and return the device that
    ``ModelSettings.device`` names."""
    apply_torch_threads(models.torch_threads)
    device = pick_device(models.device)
    log.info("models on %s (torch threads: %d)", device, torch.get_num_threads())
    return device
