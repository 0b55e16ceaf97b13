"""A property-based fuzz of the console's OpenAPI document (schemathesis): no request, valid or not, gets a 5xx.

It runs against a console of its own (own users and proposals folder) on the
session's real broker, S3 server and Milvus, logged in as a user holding every
role, sending the CSRF token, so requests reach the handlers rather than stop
at authentication; each response must also be one the document declares.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from console.auth import COOKIE
from console.users import Role, UserStore
from tests.console.conftest import PASSWORD, Console, console_settings

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def fuzzed(stack, tmp_path_factory):
    from console.app import running

    folder = tmp_path_factory.mktemp("fuzz-console")
    UserStore(folder / "users.json").add("root", list(Role), PASSWORD)
    settings = console_settings(stack, folder)
    with running(settings) as (url, ctx):
        client = Console(url, ctx, settings).login("root")
        yield url, client.cookies[COOKIE], client.headers["X-CSRF-Token"]


@pytest.fixture(scope="module")
def console_schema(fuzzed):
    url, token, _ = fuzzed
    return schemathesis.openapi.from_url(f"{url}openapi.json", headers={"Cookie": f"{COOKIE}={token}"})


def test_no_server_error(fuzzed, console_schema):
    url, token, csrf = fuzzed
    # Logging out would end the session the rest of the run uses; the API tests cover it.
    operations = [op for op in (result.ok() for result in console_schema.get_all_operations()) if op.label != "POST /api/logout"]
    assert len(operations) >= 20
    statuses: dict[str, set[int]] = {}

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def no_server_error(case):
            response = case.call(base_url=url.rstrip("/"), headers={"X-CSRF-Token": csrf}, cookies={COOKIE: token})
            statuses.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance, response_schema_conformance])

        no_server_error()
    # Every operation was exercised, and beyond validation: the handlers ran.
    assert len(statuses) == len(operations)
    assert sum(1 for codes in statuses.values() if codes & {200, 201, 204, 404, 409}) >= len(operations) // 2, statuses
