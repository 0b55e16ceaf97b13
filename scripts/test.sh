#!/usr/bin/env bash
# Set up (idempotent), then run the whole test suite. The tests start their own
# broker, S3 server and Milvus on free loopback ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Several stage processes share two cores in CI: one torch thread each avoids oversubscription.
export VIGIL_MODELS__TORCH_THREADS=${VIGIL_MODELS__TORCH_THREADS:-1}
exec .venv/bin/python -m pytest -q -ra "$@"
