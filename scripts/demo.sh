#!/usr/bin/env bash
# Set up (idempotent), then run the whole pipeline on a sample made from real
# photos (face_recognition's test images, fetched from PyPI at set-up): Obama is
# enrolled from two photos; the footage shows a third photo of him, then Biden,
# who is not enrolled. Expect one alert, for obama. Starts and stops its own
# local stack (broker, S3 server, Milvus). Ends serving the review console
# (address and two logins printed) until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VIGIL_MODELS__TORCH_THREADS=${VIGIL_MODELS__TORCH_THREADS:-1}
.venv/bin/python -m synthetic.footage sample media/samples/scenes media/samples/lobby.mp4
# The stack outlives the run (vigil run reuses a running one) so the console can show its alert; stopped on exit.
.venv/bin/vigil up >/dev/null
trap '.venv/bin/vigil down >/dev/null' EXIT
# Obama's entries outlive the run by a day (--expires) so the console can show his enrolled photos beside the alert.
.venv/bin/vigil run lobby=media/samples/lobby.mp4 --watchlist media/samples/watchlist \
  --reason "sample run" --expires 1d --report out/sample-report.json "$@"
# The audit stage seals what the console records (vigil run ran one for the run itself).
VIGIL_STAGE__HEALTH_PORT=0 VIGIL_STAGE__LOG_FORMAT=text .venv/bin/vigil stage audit >"${VIGIL_HOME:-.vigil}/audit-stage.log" 2>&1 &
audit_stage=$!
trap 'kill $audit_stage 2>/dev/null; wait $audit_stage 2>/dev/null; .venv/bin/vigil down >/dev/null' EXIT

# The review console on the same stack: two logins (an alert is confirmed by two different reviewers), then its address.
login() { .venv/bin/vigil console user add "$@" 2>/dev/null || .venv/bin/vigil console user passwd "$1"; }
echo
echo "Confirm the alert in the review console. Logins (name, password):"
login demo-admin --role admin --role authoriser --role enroller --role reviewer --role auditor
login demo-reviewer --role reviewer
.venv/bin/vigil console
