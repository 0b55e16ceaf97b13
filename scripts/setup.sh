#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: venv, pinned dependencies,
# the embedder weights (converted and hash-checked), and the sample photos.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.vigil-lock-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.vigil-lock-* && touch "$stamp"
fi
.venv/bin/python -m embed.weights --out models
.venv/bin/python scripts/fetch_samples.py --out media/samples
