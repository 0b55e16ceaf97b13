"""Real sample photos for the demo and tests: ``python -m synthetic.samples [--out media/samples]``.

The photos come from the test images of ``face_recognition==1.3.0`` (MIT
licence), whose sdist is on PyPI, so any machine that reaches PyPI can get
them: three different photos of Barack Obama and one of Joe Biden.

    OUT/watchlist/obama/obama.jpg, obama2.jpg   enrolment photos
    OUT/scenes/obama3.jpg, biden.jpg            photos to search (one match, one stranger)

The sdist (``runtime.packages.download_verified``) and every extracted file are
checked against sha256 constants.
Idempotent: files already present with the right hash are left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from runtime.packages import download_verified

SDIST_REQUIREMENT = "face_recognition==1.3.0"
SDIST_NAME = "face_recognition-1.3.0.tar.gz"
SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
MEMBER_DIR = "face_recognition-1.3.0/tests/test_images"

# destination (relative to OUT) -> (file in the sdist's test_images, sha256)
FILES: dict[str, tuple[str, str]] = {
    "watchlist/obama/obama.jpg": ("obama.jpg", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
    "watchlist/obama/obama2.jpg": ("obama2.jpg", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"),
    "scenes/obama3.jpg": ("obama3.jpg", "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"),
    "scenes/biden.jpg": ("biden.jpg", "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"),
}

SOURCE_NOTE = (
    "Test images of face_recognition 1.3.0 (https://pypi.org/project/face_recognition/, MIT licence),\n"
    "taken unchanged from its sdist by `python -m synthetic.samples`.\n"
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ok(path: Path, sha: str) -> bool:
    return path.is_file() and sha256_bytes(path.read_bytes()) == sha


def fetch_samples(out: Path, cache_dir: Path | None = None) -> list[Path]:
    """Make sure every sample is under ``out``; returns their paths."""
    out = Path(out)
    wanted = {out / dest: (name, sha) for dest, (name, sha) in FILES.items()}
    missing = {path: spec for path, spec in wanted.items() if not _ok(path, spec[1])}
    if missing:
        with tempfile.TemporaryDirectory() as tmp:
            sdist = download_verified(SDIST_REQUIREMENT, SDIST_NAME, SDIST_SHA256, Path(cache_dir) if cache_dir else Path(tmp), sdist=True)
            with tarfile.open(sdist, "r:gz") as tar:
                for path, (name, sha) in missing.items():
                    member = tar.extractfile(f"{MEMBER_DIR}/{name}")
                    if member is None:
                        raise RuntimeError(f"{SDIST_NAME} has no {MEMBER_DIR}/{name}")
                    data = member.read()
                    actual = sha256_bytes(data)
                    if actual != sha:
                        raise RuntimeError(f"{name}: sha256 {actual}, expected {sha}")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    partial = path.with_name(f".{path.name}.part")
                    partial.write_bytes(data)
                    partial.replace(path)
    note = out / "SOURCE.txt"
    if not note.exists() or note.read_text() != SOURCE_NOTE:
        out.mkdir(parents=True, exist_ok=True)
        note.write_text(SOURCE_NOTE)
    return sorted(wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch real sample photos (face_recognition 1.3.0 test images).")
    parser.add_argument("--out", type=Path, default=Path("media/samples"), help="output directory (default: media/samples)")
    parser.add_argument("--cache", type=Path, default=None, help="keep the downloaded sdist here (default: a temporary directory)")
    args = parser.parse_args(argv)
    try:
        paths = fetch_samples(args.out, args.cache)
    except (RuntimeError, subprocess.CalledProcessError) as exc:  # DownloadError is a RuntimeError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
