"""Small database helpers shared by every app."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError, models


def violated_constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint a PostgreSQL IntegrityError broke, if it says."""
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def prefetch_rows(instance: models.Model, relation: str, rows: Sequence[models.Model]) -> None:
    """Make ``instance.<relation>.all()`` return ``rows`` without a query.

    For a service that has just written the rows of a reverse foreign key and hands the
    parent to a serializer: it stores what ``prefetch_related`` would have stored.
    """
    manager = getattr(instance, relation)
    queryset = manager.all()
    queryset._result_cache = list(rows)
    queryset._prefetch_done = True
    cache = instance.__dict__.setdefault("_prefetched_objects_cache", {})
    cache[manager.field.remote_field.cache_name] = queryset


def append_only(*tables: str):
    """A migration operation that makes ``tables`` refuse UPDATE and DELETE, in the database.

    PostgreSQL raises ``restrict_violation`` (an IntegrityError in Django); SQLite aborts.
    A correction is a new row, never an edit.
    """
    from django.db import migrations

    pg_function = """
        CREATE OR REPLACE FUNCTION append_only_refuse() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION 'append-only: % on % refused; write a correcting row instead',
                TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
        END;
        $$ LANGUAGE plpgsql;
    """

    def forward(apps, schema_editor) -> None:
        vendor = schema_editor.connection.vendor
        for table in tables:
            if vendor == "postgresql":
                schema_editor.execute(pg_function, params=None)
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION append_only_refuse();",
                    params=None,
                )
            elif vendor == "sqlite":
                for op in ("UPDATE", "DELETE"):
                    schema_editor.execute(
                        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} BEGIN "
                        f"SELECT RAISE(ABORT, 'append-only: {op} on {table} refused'); END;"
                    )

    def backward(apps, schema_editor) -> None:
        vendor = schema_editor.connection.vendor
        for table in tables:
            if vendor == "postgresql":
                schema_editor.execute(
                    f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};", params=None
                )
            elif vendor == "sqlite":
                for op in ("update", "delete"):
                    schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op};")

    return migrations.RunPython(forward, backward)
