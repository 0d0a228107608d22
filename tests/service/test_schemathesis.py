"""Schemathesis over every operation of a real ``lineage serve``, with an API key of each role: whatever
schema-valid request it makes, the answer is no 5xx, a documented status, the documented media type, and a
body and headers that match the document. Bounded: a few examples per operation and role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.service.serving import Server, api_keys, make_ledger, serving

EXAMPLES = 5
"""Per operation and role: enough to reach each operation's refusals and successes, few enough that the
whole run (about 25 operations x 3 roles) stays within seconds."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
def served(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Server, dict[str, str]]]:
    ledger = tmp_path / "schemathesis.db"
    make_ledger(ledger, capsys)
    keys = api_keys(ledger)
    with serving(ledger, tmp_path / "server.log", ["--block-seconds", "0.5"]) as server:
        yield server, keys


def explore(operation: Any, base_url: str, key: str, statuses: set[int]) -> None:
    """Call ``operation`` with EXAMPLES generated requests as the holder of ``key``; check each answer."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def call(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=base_url, headers={"Authorization": key}, timeout=30)
        statuses.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    call()


def test_every_operation_keeps_to_the_document_for_every_role(served: tuple[Server, dict[str, str]]) -> None:
    server, keys = served
    document = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": keys["auditor"]}, timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == sum(len(methods) for methods in document["paths"].values()) >= 20
    calls: dict[tuple[str, str], set[int]] = {}

    for operation in operations:
        for role, key in sorted(keys.items()):
            explore(operation, server.url, key, calls.setdefault((operation.label, role), set()))
    # the run reached the operations: every one answered, and each role got past authorisation somewhere
    assert all(calls.values()), [label for label, seen in calls.items() if not seen]
    for role in keys:
        assert any(s < 400 for (_, r), seen in calls.items() if r == role for s in seen), role
    assert server.stop() == 0
