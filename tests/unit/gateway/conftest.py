"""Gateway test fixtures: a throwaway PostgreSQL cluster (see tests/postgres_fixture.py)."""

from tests.postgres_fixture import postgres_server, postgres_url  # noqa: F401
