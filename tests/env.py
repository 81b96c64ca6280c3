"""What a test hands a process it starts (a Celery worker) to reach the same database."""

from __future__ import annotations

from django.db import connection


def database_url() -> str:
    """The test database as a ``DATABASE_URL``: PostgreSQL's server, or SQLite's file."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
