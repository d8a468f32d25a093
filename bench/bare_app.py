"""The throughput ceiling: a bare FastAPI endpoint returning fixed 600-byte JSON bytes.

`python bench/bare_app.py --host 127.0.0.2 --port 18000` serves it with the very uvicorn settings
of a ratesvc API worker (`ratesvc.apiserver.uvicorn_options`), so bench/throughput.py compares
the service with the cheapest FastAPI answer under the same server, balancer and load.
`GET /serving` (HAProxy's health check) and `GET /ready` (the bench waits on it) answer 200, as the
service does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# pylint: disable-next=wrong-import-position
from ratesvc.apiserver import uvicorn_options  # noqa: E402

BODY_BYTES = 600


def fixed_body(size: int = BODY_BYTES) -> bytes:
    """A JSON document of exactly `size` bytes, shaped like a /courses answer."""
    head, tail = b'{"exchanger":"binance","courses":[],"pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


BODY = fixed_body()
app = FastAPI()


@app.get("/courses")
async def courses() -> Response:
    """Fixed bytes: no parsing, no lookup, no headers beyond the content ones."""
    return Response(BODY, media_type="application/json")


@app.get("/serving")
async def serving() -> Response:
    """HAProxy's health check (haproxy/haproxy.cfg asks /serving)."""
    return Response(b"{}", media_type="application/json")


@app.get("/ready")
async def ready() -> Response:
    """What the benchmark waits for before it starts."""
    return Response(b"{}", media_type="application/json")


def main() -> None:
    """Serve `app` on --host/--port with ratesvc's uvicorn settings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    uvicorn.run(app, **uvicorn_options(args.host, args.port))


if __name__ == "__main__":
    main()
