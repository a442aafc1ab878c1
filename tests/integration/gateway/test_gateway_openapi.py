"""The gateway's OpenAPI document and docs page, checked against a live gateway (issue C).

schemathesis generates requests for every documented operation (valid and invalid
ones, with and without the key) and checks each answer: no 500, a documented status,
content type, headers and body. The run is bounded by hypothesis settings so the
whole file stays near a minute.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import jsonschema  # type: ignore[import-untyped]
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.definitions import OPENAPI_31

from services.gateway.http.openapi import build_document
from services.gateway.main import GatewayServer
from tests.integration.gateway.conftest import StartGateway, StartInference, backend_address

KEY = "key-all"
KEYS = f"keys:\n  - {{id: team-all, key: {KEY}}}\n"
# Examples per operation and mode (17 operations): a few seconds in all on this machine.
EXAMPLES = 30
# The whole schemathesis run's bound; each operation is skipped once it is spent.
BUDGET_SECONDS = 60.0


@pytest.fixture
async def gateway(
    start_inference: StartInference, start_gateway: StartGateway, tmp_path: Path
) -> GatewayServer:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    backend = await start_inference()
    return await start_gateway(backends=backend_address(backend), api_keys_file=str(keys))


def base(gateway: GatewayServer) -> str:
    return f"http://localhost:{gateway.http_port}"


def test_document_is_valid_openapi_31() -> None:
    validator = jsonschema.validators.validator_for(OPENAPI_31)(OPENAPI_31)
    errors = [f"{list(e.path)}: {e.message[:200]}" for e in validator.iter_errors(build_document())]
    assert errors == []


async def test_openapi_and_docs_are_served_without_a_key(gateway: GatewayServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(base(gateway) + "/openapi.json") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            document = await response.json()
        assert document["openapi"] == "3.1.0"
        assert "/v2/models/{model}/infer" in document["paths"]
        async with http.get(base(gateway) + "/docs") as response:
            assert response.status == 200
            page = await response.text()
        assert "/openapi.json" in page and "https://" not in page
        async with http.get(base(gateway) + "/docs/assets/swagger-ui-bundle.js") as response:
            assert response.status == 200
            assert len(await response.read()) > 100_000


def no_internal_error(ctx: Any, response: Any, case: Any) -> None:
    """500 means a bug; 501, 503 and 504 are documented answers (no load, no backend,
    a deadline shorter than the call), which schemathesis's own check counts as errors."""
    assert response.status_code != 500, f"500 for {case.method} {case.formatted_path}"


def _fuzz(operation: Any, mode: GenerationMode, url: str, session: requests.Session) -> None:
    """One operation in one generation mode; raises schemathesis's failures."""
    # The model and version exist, so positive cases reach the backend too. Why the
    # version is fixed: the router waits (2 s) for a version no backend has before its
    # 503, which would spend the whole budget on a few operations.
    path_parameters: dict[str, str] = {"model": "pair"} if "{model}" in operation.path else {}
    if "{version}" in operation.path and mode == GenerationMode.POSITIVE:
        path_parameters["version"] = "1"
    strategy = operation.as_strategy(mode, path_parameters=path_parameters)
    # Which inputs an infer body needs is the model's metadata, not the schema's: a
    # schema-valid body naming no real input is rightly refused with 400. A readiness
    # question about a version that is not there answers false: 400.
    excluded = [not_a_server_error]
    if operation.path.endswith(("/infer", "/ready", "/generate", "/generate_stream", "/explain")):
        excluded.append(positive_data_acceptance)

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=url,
            session=session,
            excluded_checks=excluded,
            additional_checks=[no_internal_error],
        )

    check()


def _run_schemathesis(url: str) -> list[str]:
    """Every operation through schemathesis, synchronously (the gateway's loop runs on)."""
    # The key through schemathesis's auth config, so that its auth check knows the key is
    # valid and sends each case again without it and with a wrong one (expecting 401/403).
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"bearer": {"bearer": KEY}}}})
    schema = schemathesis.openapi.from_url(url + "/openapi.json", config=config)
    failures: list[str] = []
    end = time.monotonic() + BUDGET_SECONDS
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if time.monotonic() > end:
                    return failures
                try:
                    _fuzz(operation, mode, url, session)
                except Exception as exc:  # noqa: BLE001 - collected, reported together below
                    failures.append(f"{operation.label} ({mode.value}): {str(exc)[:2000]}")
    return failures


async def test_schemathesis_finds_no_server_errors_or_mismatches(gateway: GatewayServer) -> None:
    failures = await asyncio.to_thread(_run_schemathesis, base(gateway))
    assert failures == [], "\n\n".join(failures)


async def test_timeout_header_is_the_documented_plain_decimal(gateway: GatewayServer) -> None:
    """float() reads more than the document's pattern ("1e3", "+5", "1_0"); the
    gateway refuses what the document does not allow, as schemathesis expects."""
    auth = {"authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as http:
        for raw in ("1e3", "+5", "1_0", "0", "0.000", "inf"):
            headers = {**auth, "x-maas-timeout-ms": raw}
            async with http.get(base(gateway) + "/v2/models/pair", headers=headers) as response:
                assert response.status == 400, raw
                assert "x-maas-timeout-ms" in (await response.json())["error"]
        headers = {**auth, "x-maas-timeout-ms": "5000.5"}
        async with http.get(base(gateway) + "/v2/models/pair", headers=headers) as response:
            assert response.status == 200
