"""Postgres: models, migrations (aerich), and the repository that keeps ORM objects inside store/.

Never imports api/; the persister writes through RateRepository, the API only reads it to seed.
"""

from ratesvc.store.db import DB_ERRORS, migrate, open_db, tortoise_config
from ratesvc.store.repository import RateRepository

__all__ = ["DB_ERRORS", "RateRepository", "migrate", "open_db", "tortoise_config"]
