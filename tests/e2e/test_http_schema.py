"""Schemathesis against the running server: requests generated from its own OpenAPI
document (valid and invalid ones), with an admin token so every operation is reached. No
answer may be a 5xx, and every answer must match what the document declares: its status,
content type, headers and schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.http import ADMIN, PATHS, Server, build_store, start_server

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http-schema")
    db = f"sqlite:///{tmp / 'ledger.db'}"
    build_store(db, tmp)
    server = start_server(db, tmp / "serve.log")
    try:
        yield server
    finally:
        assert server.stop() == 0
        # Nothing the fuzzer sent made the server log an unexpected error.
        assert "Traceback" not in server.log.read_text(), server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def api_schema(served: Server) -> Any:
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


# Every operation of the document (the test checks the list is complete), each fuzzed with
# valid and with invalid parameters. (Driven by hand rather than by `from_fixture`, whose
# lazy loading does not run under pytest 9.)
OPEN = {"/healthz", "/readyz"}  # no parameter, no token: nothing to make invalid
CASES = [
    (path, mode)
    for path in PATHS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (path in OPEN and mode is GenerationMode.NEGATIVE)
]


def test_the_fuzzed_operations_are_all_there_are(api_schema: Any) -> None:
    assert sorted(api_schema.raw_schema["paths"]) == sorted(PATHS)


@pytest.mark.property  # Schemathesis: @given over each operation, inside the test
@pytest.mark.parametrize(("path", "mode"), CASES, ids=[f"{p}-{m.value}" for p, m in CASES])
def test_every_answer_matches_the_openapi_document(
    api_schema: Any, served: Server, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path]["GET"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            base_url=served.url,
            headers={"Authorization": f"Bearer {ADMIN}"},
            checks=CHECKS,
            timeout=10,
        )

    fuzz()
