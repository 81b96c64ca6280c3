"""Small database helpers shared by every app."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from datetime import date

from django.db import IntegrityError, models, transaction


def _together(connection, *, several: bool):
    """An atomic block around several statements; nothing around one."""
    return transaction.atomic(using=connection.alias) if several else nullcontext()


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, date):  # and datetime
        return f'"{value.isoformat()}"'
    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def array_literal(values: Iterable[object]) -> str:
    """PostgreSQL's text form of an array (``{1,"a b",NULL}``), to pass as one parameter.

    psycopg2 sends a Python list as ``ARRAY[v1, v2, …]``, an expression the server parses
    and plans element by element: ten times the cost of this one literal for a thousand
    ids, paid for every column of every set-based statement. Strings are quoted and
    escaped; dicts and lists become JSON text; ``None`` is ``NULL``.
    """
    values = list(values)
    if not values:
        return "{}"
    kinds = set(map(type, values))
    if kinds <= {int, type(None)}:  # ids, amounts: the usual column
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    if all(issubclass(kind, str) for kind in kinds):  # keys, references, codes, choices
        everything = "".join(values)
        if "\\" in everything or '"' in everything:
            return "{" + ",".join(['"' + _escape(v) + '"' for v in values]) + "}"
        return '{"' + '","'.join(values) + '"}'
    # Dates, JSON and the rest: a column often repeats one value (an instant, a
    # snapshot), which is written out once.
    first = values[0]
    if all(v is first for v in values):
        return "{" + ",".join([_element(first)] * len(values)) + "}"
    written: dict[int, str] = {}
    parts = []
    for v in values:
        text = written.get(id(v))
        if text is None:
            text = written[id(v)] = _element(v)
        parts.append(text)
    return "{" + ",".join(parts) + "}"


def _escape(text: str) -> str:
    if "\\" in text or '"' in text:
        return text.replace("\\", "\\\\").replace('"', '\\"')
    return str(text)


class AnyOf(models.Lookup):
    """``field__any=[…]``: ``field = ANY(%s)`` with the list as one array parameter.

    The same rows as ``__in``, for the large id lists of set-based code (a debit-run chunk
    filters by a thousand ids several times): ``__in`` compiles and adapts one placeholder
    per value, this one array. Other databases (SQLite for ``make run``) get ``IN``.
    """

    lookup_name = "any"
    prepare_rhs = False

    def get_db_prep_lookup(self, value, connection):
        return "%s", [array_literal(value)]

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = list(self.rhs)
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(%s)", [*lhs_params, array_literal(values)]
        if not values:
            return "1 = 0", list(lhs_params)
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", [*lhs_params, *values]


models.Field.register_lookup(AnyOf)
models.ForeignObject.register_lookup(AnyOf)


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
    A correction is a new row, never an edit. Running it again changes nothing: SQLite
    drops a table's triggers when a migration rebuilds the table, so it is run again
    after such a migration (``append_only_again``).
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
                    f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};", params=None
                )
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION append_only_refuse();",
                    params=None,
                )
            elif vendor == "sqlite":
                for op in ("UPDATE", "DELETE"):
                    schema_editor.execute(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} "
                        f"BEFORE {op} ON {table} BEGIN "
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


def append_only_again(*tables: str):
    """``append_only`` once more, for a migration after one that rebuilt ``tables`` on
    SQLite (which drops their triggers); reversed, it leaves the triggers in place."""
    from django.db import migrations

    return migrations.RunPython(append_only(*tables).code, migrations.RunPython.noop)


def fillfactor(table: str, percent: int):
    """A migration operation that leaves ``100 - percent`` of each new heap page of
    ``table`` free (PostgreSQL's ``fillfactor``; nothing on SQLite).

    For tables whose rows are updated soon after they are written (a request claimed then
    settled, an attempt sent then answered, a balance moved): the new version then fits on
    the old one's page, so the update dirties one page instead of two and, when it changes
    no indexed column, adds no index entry at all (a HOT update). Pages already written keep
    their packing until they are rewritten; the statement takes a lock that blocks neither
    reads nor writes.
    """
    from django.db import migrations

    def set_to(value: int):
        def apply(apps, schema_editor) -> None:
            if schema_editor.connection.vendor == "postgresql":
                schema_editor.execute(
                    f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = {value})",
                    params=None,
                )

        return apply

    if not 10 <= percent <= 100:
        raise ValueError(f"fillfactor must be between 10 and 100, not {percent}")
    return migrations.RunPython(set_to(percent), set_to(100), elidable=False)


def _postgres_index_operations():
    """``AddIndexConcurrently`` / ``RemoveIndexConcurrently`` that fall back to the plain
    operation off PostgreSQL (SQLite for ``make run``). Built on first use, so that this
    module does not import ``django.contrib.postgres`` at start-up."""
    from django.contrib.postgres import operations as pg
    from django.db.migrations.operations import AddIndex, RemoveIndex

    def on_postgres_only(concurrent, plain):
        class Operation(concurrent):
            def database_forwards(self, app_label, schema_editor, from_state, to_state):
                if schema_editor.connection.vendor == "postgresql":
                    return super().database_forwards(app_label, schema_editor, from_state, to_state)
                return plain.database_forwards(self, app_label, schema_editor, from_state, to_state)

            def database_backwards(self, app_label, schema_editor, from_state, to_state):
                if schema_editor.connection.vendor == "postgresql":
                    return super().database_backwards(
                        app_label, schema_editor, from_state, to_state
                    )
                return plain.database_backwards(
                    self, app_label, schema_editor, from_state, to_state
                )

        Operation.__name__ = concurrent.__name__
        return Operation

    return (
        on_postgres_only(pg.AddIndexConcurrently, AddIndex),
        on_postgres_only(pg.RemoveIndexConcurrently, RemoveIndex),
    )


def add_index_concurrently(model_name: str, index: models.Index):
    """``migrations.AddIndex`` built ``CONCURRENTLY`` on PostgreSQL: the table stays
    readable and writable while the index is built. In a migration with ``atomic =
    False``."""
    add, _remove = _postgres_index_operations()
    return add(model_name=model_name, index=index)


def remove_index_concurrently(model_name: str, name: str):
    """``migrations.RemoveIndex`` dropped ``CONCURRENTLY`` on PostgreSQL (no exclusive lock
    on the table while it waits for running queries). In a migration with ``atomic =
    False``."""
    _add, remove = _postgres_index_operations()
    return remove(model_name=model_name, name=name)


def drop_index_concurrently(table: str, name: str, columns: Sequence[str]):
    """Drop an index Django made for a field (``db_index``) without the table's exclusive
    lock on PostgreSQL, for the database half of a ``SeparateDatabaseAndState`` whose state
    half sets ``db_index=False``; put back the same way in reverse. In a migration with
    ``atomic = False``."""
    from django.db import migrations

    def drop(apps, schema_editor) -> None:
        how = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
        schema_editor.execute(f"DROP INDEX {how}IF EXISTS {name}", params=None)

    def create(apps, schema_editor) -> None:
        how = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
        schema_editor.execute(
            f"CREATE INDEX {how}IF NOT EXISTS {name} ON {table} ({', '.join(columns)})",
            params=None,
        )

    return migrations.RunPython(drop, create, elidable=False)


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


def _column_types(model: type[models.Model], names: Sequence[str]) -> list[tuple[str, str]]:
    """(column, array element type) of ``model``'s fields ``names`` (attnames, e.g.
    ``entry_id``); JSON travels as text and is cast on the way in."""
    from django.db import connection

    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    columns = []
    for name in names:
        field = by_attname[name]
        db_type = field.rel_db_type(connection) if field.is_relation else field.db_type(connection)
        # The base type: an explicit cast to varchar(n) or numeric(p, s) would truncate or
        # round silently, where storing into the column raises as the ORM does.
        columns.append((field.column, db_type.split("(")[0].strip()))
    return columns


def _arrays(columns: list[tuple[str, str]], rows: Sequence[Sequence[object]]) -> tuple[str, list]:
    """``unnest(%s::t1[], …) AS v(c1, …)`` and its parameters: one array literal per
    column (JSON travels as text)."""
    if rows and len(rows[0]) != len(columns):  # the others: zip(strict=True) below
        raise ValueError(
            f"each row needs {len(columns)} values: {', '.join(c for c, _ in columns)}"
        )
    params: list[Sequence[object]] = (
        list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    )
    for i, (_column, db_type) in enumerate(columns):
        if db_type == "jsonb":  # any JSON value, a string or a number included
            written: dict[int, str | None] = {}
            params[i] = [
                written[id(v)]
                if id(v) in written
                else written.setdefault(id(v), None if v is None else json.dumps(v))
                for v in params[i]
            ]
    casts = [
        "%s::text[]" if db_type == "jsonb" else f"%s::{db_type}[]" for _column, db_type in columns
    ]
    names = ", ".join(column for column, _ in columns)
    return (
        f"unnest({', '.join(casts)}) WITH ORDINALITY AS v({names}, ord)",
        [array_literal(values) for values in params],
    )


def insert_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    returning: str | Sequence[str] | None = "id",
    skip_conflicts: bool = False,
) -> list:
    """Insert ``rows`` (tuples in the order of ``fields``) in one statement; returns the
    ``returning`` column of each row, in the order given (a tuple per row if ``returning``
    names several). Fields not named get their model default. ``skip_conflicts``: a row a
    unique constraint refuses is left out (``ON CONFLICT DO NOTHING``) and not returned.

    The set-based writer of the hot paths (the debit run, the ledger): one array per
    column, ``INSERT … SELECT FROM unnest(…)``, so a thousand rows cost one round trip
    and no model instances. No signals and no ``save()``; the caller owns the rules the
    rows obey. Rows come back in insertion order, as Django's ``bulk_create`` relies on
    too. SQLite gets the same semantics from ``INSERT … VALUES``.
    """
    from django.db import connection

    if not rows:
        return []
    if connection.vendor != "postgresql":  # SQLite (``make run``)
        return _insert_values(model, fields, rows, returning, skip_conflicts)
    columns = _column_types(model, fields)
    source, params = _arrays(columns, rows)
    select = [
        f"v.{column}::jsonb" if db_type == "jsonb" else f"v.{column}" for column, db_type in columns
    ]
    # Fields left out get their model default, as ``Model()`` would give them: one value
    # for every row, so one parameter rather than a column of copies.
    defaults = _defaults(model, fields)
    default_columns = _column_types(model, [f.attname for f in defaults])
    default_params = []  # they come first in the statement, before the arrays
    for field, (_column, db_type) in zip(defaults, default_columns, strict=True):
        value = field.get_default()
        select.append("%s::jsonb" if db_type == "jsonb" else f"%s::{db_type}")
        default_params.append(json.dumps(value) if db_type == "jsonb" else value)
    params = [*default_params, *params]
    sql = (
        f"INSERT INTO {model._meta.db_table} "
        f"({', '.join(c for c, _ in [*columns, *default_columns])}) "
        f"SELECT {', '.join(select)} FROM {source} ORDER BY v.ord"
        + (" ON CONFLICT DO NOTHING" if skip_conflicts else "")
    )
    with connection.cursor() as cursor:
        if returning is None:
            cursor.execute(sql, params)
            return []
        names = [returning] if isinstance(returning, str) else list(returning)
        columns_back = ", ".join(model._meta.get_field(name).column for name in names)
        cursor.execute(f"{sql} RETURNING {columns_back}", params)
        rows_back = cursor.fetchall()
    if isinstance(returning, str):
        return [row[0] for row in rows_back]
    return [tuple(row) for row in rows_back]


def _defaults(model: type[models.Model], fields: Sequence[str]) -> list[models.Field]:
    """The fields ``insert_rows`` fills with their model default: those not named that
    ``Model()`` would give a value (a default, or the empty string)."""
    return [
        f
        for f in model._meta.concrete_fields
        if f.attname not in fields
        and not f.primary_key
        and (f.has_default() or (f.empty_strings_allowed and not f.null))
    ]


def _insert_values(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[object]],
    returning: str | Sequence[str] | None,
    skip_conflicts: bool,
) -> list:
    """``insert_rows`` off PostgreSQL (SQLite for ``make run``): ``INSERT … VALUES …
    [ON CONFLICT DO NOTHING] RETURNING …``, as many rows a statement as the parameter
    limit allows, each value prepared by its field as the ORM would."""
    from django.db import connection

    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    named = [by_attname[name] for name in fields]
    defaults = _defaults(model, fields)
    default_values = [f.get_db_prep_save(f.get_default(), connection) for f in defaults]
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in [*named, *defaults])
    names = [] if returning is None else [returning] if isinstance(returning, str) else returning
    back = [model._meta.get_field(name) for name in names]
    converters = []
    for field in back:
        col = field.get_col(model._meta.db_table)
        converters.append(
            [*connection.ops.get_db_converters(col), *field.get_db_converters(connection)]
        )
    width = len(named) + len(defaults)
    per_statement = max(1, (connection.features.max_query_params or 999) // max(width, 1))
    found: list = []
    # Several statements stand or fall together, as PostgreSQL's one statement does (one
    # is atomic by itself: no savepoint, so the query counts stay those of PostgreSQL).
    with _together(connection, several=len(rows) > per_statement):
        for start in range(0, len(rows), per_statement):
            batch = rows[start : start + per_statement]
            params: list[object] = []
            for row in batch:
                if len(row) != len(named):
                    raise ValueError(
                        f"each row needs {len(named)} values: {', '.join(f.column for f in named)}"
                    )
                params.extend(
                    f.get_db_prep_save(v, connection) for f, v in zip(named, row, strict=True)
                )
                params.extend(default_values)
            placeholder = "(" + ", ".join(["%s"] * width) + ")"
            sql = (
                f"INSERT INTO {qn(model._meta.db_table)} ({columns}) "
                f"VALUES {', '.join([placeholder] * len(batch))}"
                + (" ON CONFLICT DO NOTHING" if skip_conflicts else "")
                + (f" RETURNING {', '.join(qn(f.column) for f in back)}" if back else "")
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                if back:
                    found.extend(cursor.fetchall())
    values = []
    for row in found:
        converted = []
        for field, value, field_converters in zip(back, row, converters, strict=True):
            col = field.get_col(model._meta.db_table)
            for convert in field_converters:
                value = convert(value, col, connection)
            converted.append(value)
        values.append(converted[0] if isinstance(returning, str) else tuple(converted))
    return values


def _update_values(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    key: str,
    only_if: Mapping[str, Sequence[object] | None],
    add: Sequence[str],
) -> int:
    """``update_rows`` off PostgreSQL (SQLite for ``make run``): ``UPDATE … FROM (VALUES
    …)``, as many rows a statement as the parameter limit allows, each value prepared by
    its field as the ORM would."""
    from django.db import connection

    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    named = [by_attname[name] for name in [key, *fields]]
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    added = {by_attname[name].column for name in add}
    names = [f"column{i + 1}" for i in range(len(named))]  # how SQLite names VALUES' columns
    assignments = ", ".join(
        f"{qn(f.column)} = {table}.{qn(f.column)} + v.{name}"
        if f.column in added
        else f"{qn(f.column)} = v.{name}"
        for f, name in zip(named[1:], names[1:], strict=True)
    )
    where = [f"{table}.{qn(named[0].column)} = v.{names[0]}"]
    where_params: list[object] = []
    for name, values in only_if.items():
        field = by_attname[name]
        if values is None:
            where.append(f"{table}.{qn(field.column)} IS NULL")
        elif not values:
            where.append("0 = 1")
        else:
            where.append(f"{table}.{qn(field.column)} IN ({', '.join(['%s'] * len(values))})")
            where_params.extend(field.get_db_prep_value(v, connection) for v in values)
    limit = (connection.features.max_query_params or 999) - len(where_params)
    per_statement = max(1, limit // len(named))
    changed = 0
    # Several statements stand or fall together, as PostgreSQL's one statement does (one
    # is atomic by itself: no savepoint, so the query counts stay those of PostgreSQL).
    with _together(connection, several=len(rows) > per_statement):
        for start in range(0, len(rows), per_statement):
            batch = rows[start : start + per_statement]
            params: list[object] = []
            for row in batch:
                params.extend(
                    f.get_db_prep_save(v, connection) for f, v in zip(named, row, strict=True)
                )
            placeholder = "(" + ", ".join(["%s"] * len(named)) + ")"
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET {assignments} "
                    f"FROM (VALUES {', '.join([placeholder] * len(batch))}) AS v "
                    f"WHERE {' AND '.join(where)}",
                    [*params, *where_params],
                )
                changed += cursor.rowcount
    return changed


def update_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    key: str = "id",
    only_if: Mapping[str, Sequence[object] | None] | None = None,
    add: Sequence[str] = (),
) -> int:
    """Set ``fields`` of the rows whose ``key`` is each row's first value, in one
    statement (``UPDATE … FROM unnest(…)``); the rows' remaining values follow ``fields``.

    ``only_if`` leaves alone the rows whose field (attname) is not among the values given,
    or, for ``None``, not null. Fields named in ``add`` are incremented by the value given
    (``balance = balance + v.balance``) instead of set. Returns how many rows changed.
    Rows are locked by the statement itself, in the order PostgreSQL meets them: a caller
    that needs an order locks them first."""
    from django.db import connection

    if not rows:
        return 0
    only_if = dict(only_if or {})
    if connection.vendor != "postgresql":  # SQLite (``make run``)
        return _update_values(model, fields, rows, key=key, only_if=only_if, add=add)
    columns = _column_types(model, [key, *fields])
    source, params = _arrays(columns, rows)
    key_column = columns[0][0]
    table = model._meta.db_table
    added = {column for column, _ in _column_types(model, list(add))}
    assignments = ", ".join(
        f"{column} = v.{column}::jsonb"
        if db_type == "jsonb"
        else f"{column} = {table}.{column} + v.{column}"
        if column in added
        else f"{column} = v.{column}"
        for column, db_type in columns[1:]
    )
    # The same keys again as ``= ANY(…)`` on the table: without it the planner joins the
    # rows given to the table by hashing the whole table (a sequential scan per statement,
    # growing with the table); with it, it finds them through the key's index.
    where = [f"{table}.{key_column} = v.{key_column}", f"{table}.{key_column} = ANY(%s)"]
    params.append(array_literal(row[0] for row in rows))
    for (column, _type), values in zip(
        _column_types(model, list(only_if)), only_if.values(), strict=True
    ):
        if values is None:
            where.append(f"{table}.{column} IS NULL")
        else:
            where.append(f"{table}.{column} = ANY(%s)")
            params.append(array_literal(values))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {assignments} FROM {source} WHERE {' AND '.join(where)}",
            params,
        )
        return cursor.rowcount
