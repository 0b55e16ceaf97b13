#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite. The tests start their own
# broker, S3 server and Milvus on free loopback ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The interpreter with OpenCV 4.6 that checks the converted FaceNet weights against the original graph.
export VIGIL_OPENCV_PYTHON=${VIGIL_OPENCV_PYTHON:-$PWD/.venv-opencv/bin/python}
# Several stage processes share two cores in CI: one torch thread each avoids oversubscription.
export VIGIL_MODELS__TORCH_THREADS=${VIGIL_MODELS__TORCH_THREADS:-1}
exec .venv/bin/python -m pytest -q -ra "$@"
