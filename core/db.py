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


def update_in_chunks(
    *,
    table: str,
    assignments: str,
    assignment_params: Sequence[object],
    where: str,
    where_params: Sequence[object],
    chunk: int,
    on_chunk=None,
) -> int:
    """``UPDATE table SET assignments WHERE where``, walking the rows once in id order.

    Each statement updates at most ``chunk`` rows with ids above the last one done and
    commits on its own, so locks are short and a failure loses at most one chunk. On
    PostgreSQL the rows are taken ``FOR UPDATE SKIP LOCKED``: the job never waits for a
    row a payment holds and can never be part of a deadlock; a skipped row is left for the
    next run. SQLite (``make run``) serializes writers, so one statement does it all there.

    ``on_chunk(ids)`` runs inside each chunk's transaction with the ids it updated (only
    when given: collecting ids costs an array per chunk). Returns how many rows changed.
    """
    from django.db import connection, transaction

    pg = connection.vendor == "postgresql"
    total, after_id = 0, 0
    while True:
        if pg:
            sql = f"""
                WITH changed AS (
                    UPDATE {table} SET {assignments}
                    WHERE id = ANY(ARRAY(
                        SELECT id FROM {table} WHERE ({where}) AND id > %s
                        ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED))
                    RETURNING id)
                SELECT count(*), max(id), CASE WHEN %s THEN array_agg(id) END FROM changed"""
            params = [*assignment_params, *where_params, after_id, chunk, on_chunk is not None]
        else:
            sql = f"UPDATE {table} SET {assignments} WHERE {where} RETURNING id"
            params = [*assignment_params, *where_params]
        with transaction.atomic(durable=True), connection.cursor() as cursor:
            cursor.execute(sql, params)
            if pg:
                count, last_id, ids = cursor.fetchone()
            else:
                ids = [row[0] for row in cursor.fetchall()]
                count, last_id = len(ids), max(ids, default=None)
            if on_chunk is not None and ids:
                on_chunk(list(ids))
        total += count
        after_id = last_id or after_id
        # A short chunk means the ordered scan reached the end of the matching rows.
        if count < chunk or not pg:
            return total
