"""Schemathesis fuzzes every route against the service's own /openapi.json, through the fast path.

Requests are generated from the schema (valid and invalid query values, headers, methods) and
sent in-process to what a worker serves (`worker_app`: request edge, fast path, FastAPI). Every
answer must be no 5xx and conform to the schema: documented status, content type, headers and
body. A bounded number of examples per route keeps the run to seconds; a failure prints the
reproducing request.
"""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from ratesvc.api.app import create_app, worker_app
from ratesvc.api.mirror import RateMirror
from ratesvc.domain import SourceState, SourceStatus, Transport
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import T0, FakeClock
from tests.unit.api.test_v2 import market

EXAMPLES_PER_ROUTE = 60


def app() -> object:
    """A worker over a loaded snapshot: both exchangers, Binance's crosses with their books."""
    clock = FakeClock(T0 + 1_000)
    mirror = RateMirror(clock=clock)
    mirror.load(market(), [SourceStatus("binance", SourceState.UP, T0 - 1, Transport.WS)])
    mirror.set_following(True)
    api = create_app(Settings(_env_file=None), mirror=mirror)  # type: ignore[call-arg]
    # /v2/stream never ends on its own: with the hub in its shutdown state every stream sends its
    # first event and ends there (as when the worker stops), so each fuzzed 200 is one whole
    # event to validate, and every bad input still gets its problem answer.
    api.state.push.close_all()
    return worker_app(api)


# 414: a query string over 1024 bytes is refused whatever its parameters (documented on every
# route); JSON Schema can limit each value, not the whole query, so schema-valid values can add
# up to a 414. Both directions of the check accept it as the documented answer.
# The routes that read Postgres (/v2/history; /v2/courses and /courses with `at`) answer
# schema-valid input with what the schema cannot express: 400 for a range of over 1,500 candles, a
# future or too old `at`, `from` after `to`, or `at` on /courses under version 1; 404 when nothing
# was stored before `at`; 503 here, where no DATABASE_URL is set
# (tests/integration/test_history_fuzz.py fuzzes them on a real Postgres).
HISTORY_ACCEPTS = ["2xx", "3xx", "400", "404", "414", "503"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "414"]},
            "negative_data_rejection": {"expected-statuses": ["400", "404", "405", "406", "414"]},
        },
        "operations": [
            {
                "include-path": path,
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": HISTORY_ACCEPTS},
                    # the documented 503 without Postgres; any other 5xx still fails
                    "not_a_server_error": {
                        "expected-statuses": ["1xx", "2xx", "3xx", "4xx", "503"]
                    },
                },
            }
            for path in ("/v2/history", "/v2/courses", "/courses")
        ],
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app(), config=CONFIG)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_ROUTE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_route_answers_as_its_schema_says_and_never_with_a_5xx(
    case: schemathesis.Case,
) -> None:
    case.call_and_validate()
