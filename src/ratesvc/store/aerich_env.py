"""TORTOISE_ORM for the aerich CLI only; imported by nothing in ratesvc.

The one store module that reads the environment at import: DATABASE_URL from the environment or
`.env`, else a local default (enough for ``aerich migrate --offline``). The application itself
passes Settings.database_url to store.db.tortoise_config / migrate.
"""

from __future__ import annotations

import os

from dotenv import dotenv_values

from ratesvc.store.db import tortoise_config

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ratesvc"

_url = (
    os.environ.get("DATABASE_URL")
    or dotenv_values(".env").get("DATABASE_URL")
    or DEFAULT_DATABASE_URL
)
TORTOISE_ORM = tortoise_config(_url.replace("postgresql://", "postgres://", 1))
