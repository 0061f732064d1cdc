"""The REST API against its own OpenAPI schema, with schemathesis generating the requests.

Every operation is called with generated valid and invalid input by an admin (who may call them
all) and the answers are checked against the schema: status codes documented, bodies of the
declared shape, no server error, invalid input refused, and no operation that works without
credentials. A separate station keeps the other tests' data out of its way.

(schemathesis' ``from_fixture`` does not run under pytest 9, so each operation gets one test here
that drives its hypothesis strategy itself.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from tests.web.conftest import BlobInspector, Served, add_users, make_station, serve

from flawscope.web import api


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every API operation, from the routes themselves (no server needed)."""
    app = FastAPI()
    app.include_router(api.router)
    return [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    station = make_station(tmp_path_factory.mktemp("schema") / "st", n=21)
    add_users(station.url)
    for served in serve(station):
        # Uploads go through the same checks with or without a model; one is loaded so that no
        # answer is "503: no model".
        served.app.state.web.inspector = BlobInspector()  # type: ignore[attr-defined]
        yield served


@pytest.fixture(scope="module")
def api_schema(api_server: Served):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(api_server.url + "/api/openapi.json", timeout=30)


@pytest.mark.parametrize(("method", "path"), _operations())
def test_the_api_keeps_to_its_schema(api_server: Served, api_schema, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    operation = api_schema[path][method]
    auth = {"Authorization": f"Bearer {api_server.tokens['root']}"}  # the name the schema declares

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:  # type: ignore[no-untyped-def]
        # In the case, not in the call: schemathesis' auth check then also sends it without.
        case.headers = {**(case.headers or {}), **auth}
        # The schema can say "a file", not "a decodable image": arbitrary bytes are rightly refused.
        excluded = [positive_data_acceptance] if path.startswith("/api/v1/inspect") else []
        case.call_and_validate(base_url=api_server.url, excluded_checks=excluded)

    check()
