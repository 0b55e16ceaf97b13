#!/usr/bin/env bash
# Set up (idempotent), then run the whole pipeline on a sample made from real
# photos (face_recognition's test images, fetched from PyPI at set-up): Obama is
# enrolled from two photos; the footage shows a third photo of him, then Biden,
# who is not enrolled. Expect one alert, for obama. Starts and stops its own
# local stack (broker, S3 server, Milvus).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VIGIL_MODELS__TORCH_THREADS=${VIGIL_MODELS__TORCH_THREADS:-1}
.venv/bin/python -m synthetic.footage sample media/samples/scenes media/samples/lobby.mp4
exec .venv/bin/vigil run lobby=media/samples/lobby.mp4 --watchlist media/samples/watchlist \
  --reason "sample run" --report out/sample-report.json "$@"
