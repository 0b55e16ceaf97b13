"""``vigil run`` supervises its stage processes as Kubernetes would (real processes over the real services).

A stage that exits is restarted; one that keeps exiting ends the run after ``max_restarts`` exits in a row, with a
message naming the stage and its cause. (The fault suite, bench/faults.py and tests/bench/test_faults.py, checks
that a killed stage is restarted and the run still gives the alerts of a fault-free run.)
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = [pytest.mark.services, pytest.mark.models, pytest.mark.slow]


def test_a_stage_that_cannot_start_is_restarted_then_fails_the_run_naming_it_and_why(stack, tmp_path):
    from runtime.errors import ExitCode
    from vigil.run import PipelineRun

    missing = f"absent_{uuid.uuid4().hex[:8]}"  # match refuses to start without its watchlist (it never makes an empty one)
    run = PipelineRun(stack.settings, [f"cam-sup={tmp_path / 'never-read.mp4'}"], home=tmp_path, out=open(tmp_path / "run.log", "w"),
                      stage_env={"match": {"VIGIL_MILVUS__COLLECTION": missing}}, max_restarts=1)
    with pytest.raises(RuntimeError) as failure:
        run.execute(ready_timeout_s=240)
    message = str(failure.value)
    assert f"stage match exited with {int(ExitCode.PERMANENT)} 2 times in a row" in message, message
    assert missing in message and "does not exist" in message, message
    assert run.restarts["match"] == 1  # restarted once, then given up on
    said = (tmp_path / "run.log").read_text()
    assert "stage match exited with 78" in said and "restarting it in" in said, said
    assert all(stage.process.poll() is not None for stage in run.stages.values())  # nothing left running
