"""The daily overdue run: our job against one hand-written SQL ``UPDATE``, on PostgreSQL.

What it measures
    Wall-clock seconds to mark ``--debts`` due wallet BNPL debts overdue (default
    1,000,000), two ways, on the same data:

    * **ours** — ``wallet.services.debts_mark_overdue(business_date=…)``, the first step of
      the ``wallet.daily_debt_run`` task, called in this (Django) process with nothing
      connected to ``debt_overdue`` (the default): one ORM ``UPDATE`` in a durable
      transaction. Only that call is timed; Django's connection is already open.
    * **sql** — ``UPDATE wallet_walletdebt SET status = 'overdue', overdue_since = %s
      WHERE status = 'outstanding' AND due_date < %s`` and ``COMMIT`` through an open
      psycopg2 connection, timed the same way.

    It prints each round, the medians and the ratio (sql ÷ ours); target ≥ 0.8. Variants
    are interleaved (ours, sql, ours, sql, …) for ``--rounds`` rounds. After every variant
    the script checks that exactly the due debts were marked, and nothing else.

    Informational, one round after the others: **ours + listener** — the same call with a
    receiver connected to ``debt_overdue``, which takes the ``RETURNING id`` path and hands
    every id to the receiver after commit: what an integrator's listener costs.

Data
    ``--debts`` due debts (outstanding, due 1 to 60 days before the business date), plus
    debts the ``WHERE`` clause must skip: a tenth as many not yet due (due on the business
    date or up to 29 days after it), a twentieth repaid, a twentieth already overdue. They
    belong to one wallet per 100 due debts (users, approved customers, wallet ledger
    accounts and wallets), and sit in the table in ``created_at`` order. The ledger holds
    no postings: marking debts overdue moves no money. Everything is written with
    set-based SQL (``generate_series``) into a seed table once.

Same starting state for every variant
    Before each timed variant, untimed: ``TRUNCATE wallet_walletdebt``, reload it from the
    seed table in ``id`` order, ``VACUUM (ANALYZE)``, ``CHECKPOINT``. Heap, indexes,
    statistics and the checkpoint position (full-page images in the WAL) are then the same
    for every run, which an ``UPDATE`` back to outstanding does not give (each cycle moves
    the row versions and grows the indexes). WAL written by each variant is printed too.

How
    A dedicated database (``<name>_bench_overdue`` on the server of ``DATABASE_URL``,
    default ``postgres://postgres@127.0.0.1:5432/oms``, so ``oms_bench_overdue``) is dropped
    and recreated, migrated with ``manage.py migrate``, filled, and dropped at the end
    unless ``--keep-db``.

Run from the repository root::

    .venv/bin/python bench/overdue.py            # 1,000,000 due debts × 3 rounds
    .venv/bin/python bench/overdue.py --quick    # smoke run: 100,000 due debts, 1 round
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchdb import DEFAULT_DATABASE_URL, bench_urls, child_env, drop_database, recreate_database

REPO = Path(__file__).resolve().parent.parent
BUSINESS_DATE = date(2025, 7, 1)
DEBTS_PER_WALLET = 100  # due debts per wallet: 1,000,000 due debts → 10,000 wallets
TARGET = 0.8
SEED_TABLE = "bench_walletdebt_seed"
DEBT_COLUMNS = (
    "id, wallet_id, principal, principal_repaid, interest_charged, interest_paid, "
    "written_off, status, resolution, reference_type, reference_id, created_at, due_date, "
    "overdue_since, repaid_at, resolved_by_id"
)

SQL_MARK = (
    "UPDATE wallet_walletdebt SET status = 'overdue', overdue_since = %s "
    "WHERE status = 'outstanding' AND due_date < %s"
)


def manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )


# --- data ------------------------------------------------------------------------------


def counts_for(debts: int) -> dict[str, int]:
    """How many debts of each kind, and how many wallets they belong to."""
    return {
        "due": debts,
        "not_due": debts // 10,
        "repaid": debts // 20,
        "overdue_before": debts // 20,
        "wallets": max(1, debts // DEBTS_PER_WALLET),
    }


def setup_data(cur, counts: dict[str, int]) -> None:
    """Users, customers, wallet accounts, wallets; the seed table of debts. Set-based SQL."""
    params = {"n": counts["wallets"], "day": BUSINESS_DATE}
    cur.execute(
        """
        INSERT INTO auth_user (id, password, last_login, is_superuser, username, first_name,
                               last_name, email, is_staff, is_active, date_joined)
        SELECT g, '!bench-no-login', NULL, false, 'bench-overdue-' || g, 'Bench', '',
               'bench-overdue-' || g || '@example.com', false, true, now()
        FROM generate_series(1, %(n)s) AS g
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO customers_customer (id, user_id, tier, kyc_status, kyc_updated_at, phone,
                                        created_at)
        SELECT g, g, 'standard', 'approved', now(), '', now()
        FROM generate_series(1, %(n)s) AS g
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO ledger_account (id, code, purpose, currency, normal_side, non_negative,
                                    balance, created_at, customer_id)
        SELECT g, 'wallet:' || g || ':EUR', 'customer_wallet', 'EUR', 'credit', true, 0,
               now(), g
        FROM generate_series(1, %(n)s) AS g
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO wallet_wallet (id, currency, created_at, account_id, customer_id)
        SELECT g, 'EUR', now(), g, g FROM generate_series(1, %(n)s) AS g
        """,
        params,
    )
    due, not_due = counts["due"], counts["not_due"]
    repaid, overdue_before = counts["repaid"], counts["overdue_before"]
    # k numbers the debts by kind; the table gets them in created_at order (id = rank).
    cur.execute(
        f"""
        CREATE UNLOGGED TABLE {SEED_TABLE} AS
        WITH raw AS (
            SELECT k, 'outstanding'::varchar AS status, %(day)s::date - 1 - k %% 60 AS due_date
            FROM generate_series(1, %(a)s) AS k
            UNION ALL
            SELECT k, 'outstanding', %(day)s::date + k %% 30
            FROM generate_series(%(a)s + 1, %(b)s) AS k
            UNION ALL
            SELECT k, 'repaid', %(day)s::date - 1 - k %% 90
            FROM generate_series(%(b)s + 1, %(c)s) AS k
            UNION ALL
            SELECT k, 'overdue', %(day)s::date - 61 - k %% 60
            FROM generate_series(%(c)s + 1, %(d)s) AS k
        ), dated AS (
            SELECT k, status, due_date,
                   ((due_date - 30)::timestamp
                    + make_interval(secs => (k::bigint * 7919) %% 86400)) AT TIME ZONE 'UTC'
                       AS created_at,
                   1000 + (k::bigint * 104729) %% 99000 AS principal
            FROM raw
        )
        SELECT row_number() OVER (ORDER BY created_at, k) AS id,
               1 + k %% %(n)s AS wallet_id,
               principal,
               CASE WHEN status = 'repaid' THEN principal ELSE 0 END AS principal_repaid,
               0::bigint AS interest_charged,
               0::bigint AS interest_paid,
               0::bigint AS written_off,
               status,
               CASE WHEN status = 'repaid' THEN 'repaid' ELSE '' END::varchar AS resolution,
               'oms.order'::varchar AS reference_type,
               k::varchar AS reference_id,
               created_at,
               due_date,
               CASE WHEN status = 'overdue' THEN due_date + 1 END AS overdue_since,
               CASE WHEN status = 'repaid' THEN created_at + interval '10 days' END
                   AS repaid_at,
               NULL::integer AS resolved_by_id
        FROM dated
        """,
        {
            **params,
            "a": due,
            "b": due + not_due,
            "c": due + not_due + repaid,
            "d": due + not_due + repaid + overdue_before,
        },
    )
    for table in ("auth_user", "customers_customer", "ledger_account", "wallet_wallet"):
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )


def reset_debts(cur, total: int) -> bool:
    """Reload the debts from the seed table; vacuum, analyze, checkpoint. Untimed.

    Returns whether the checkpoint ran (it needs superuser or ``pg_checkpoint``).
    """
    import psycopg2

    cur.execute("BEGIN")
    cur.execute("TRUNCATE wallet_walletdebt")
    cur.execute(
        f"INSERT INTO wallet_walletdebt ({DEBT_COLUMNS}) "
        f"SELECT {DEBT_COLUMNS} FROM {SEED_TABLE} ORDER BY id"
    )
    loaded = cur.rowcount
    cur.execute("COMMIT")
    if loaded != total:
        raise SystemExit(f"reset loaded {loaded} debts, expected {total}")
    cur.execute("VACUUM (ANALYZE) wallet_walletdebt")
    try:
        cur.execute("CHECKPOINT")
    except psycopg2.errors.InsufficientPrivilege:
        return False
    return True


def status_counts(cur) -> dict[tuple[str, bool | None], int]:
    cur.execute(
        "SELECT status, overdue_since = %s, count(*) FROM wallet_walletdebt GROUP BY 1, 2",
        (BUSINESS_DATE,),
    )
    return {(status, today): n for status, today, n in cur.fetchall()}


def verify_marked(cur, label: str, marked: int, counts: dict[str, int]) -> None:
    """Exactly the due debts are overdue since the business date; nothing else moved."""
    got = status_counts(cur)
    want = {
        ("overdue", True): counts["due"],
        ("overdue", False): counts["overdue_before"],
        ("outstanding", None): counts["not_due"],
        ("repaid", None): counts["repaid"],
    }
    want = {key: n for key, n in want.items() if n}
    if marked != counts["due"] or got != want:
        raise SystemExit(
            f"{label}: reported {marked} marked, expected {counts['due']}; "
            f"rows by (status, overdue since business date): {got}, expected {want}"
        )


def wal_lsn(cur) -> str:
    cur.execute("SELECT pg_current_wal_lsn()")
    return cur.fetchone()[0]


def wal_mb(cur, start: str) -> float:
    cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (start,))
    return float(cur.fetchone()[0]) / 1e6


def relation_sizes(cur) -> str:
    cur.execute(
        "SELECT pg_table_size('wallet_walletdebt'), pg_indexes_size('wallet_walletdebt'), "
        "(SELECT count(*) FROM pg_indexes WHERE tablename = 'wallet_walletdebt')"
    )
    table, indexes, n = cur.fetchone()
    return f"table {table / 1e6:.0f} MB, {n} indexes {indexes / 1e6:.0f} MB"


def postgres_version(cur) -> str:
    cur.execute("SHOW server_version")
    return cur.fetchone()[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- the variants ----------------------------------------------------------------------


def run_ours() -> tuple[float, int, list[str]]:
    """debts_mark_overdue in this process; (seconds, marked, SQL it sent)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from wallet.services import debts_mark_overdue

    connection.ensure_connection()
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        marked = debts_mark_overdue(business_date=BUSINESS_DATE)
        elapsed = time.perf_counter() - started
    return elapsed, marked, [q["sql"] for q in captured.captured_queries]


def run_sql(conn) -> tuple[float, int]:
    """The hand-written UPDATE and its COMMIT on an open psycopg2 connection."""
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(SQL_MARK, (BUSINESS_DATE, BUSINESS_DATE))
        marked = cur.rowcount
    conn.commit()
    return time.perf_counter() - started, marked


def run_ours_with_listener() -> tuple[float, int, int]:
    """debts_mark_overdue with a receiver on debt_overdue; (seconds, marked, ids received)."""
    from django.db import connection

    from wallet.services import debts_mark_overdue
    from wallet.signals import debt_overdue

    received: list[int] = []

    def receiver(sender, debt_ids, business_date, **kwargs):
        received.append(len(debt_ids))

    from wallet.models import WalletDebt

    # Connected for the job's sender, as an integrator would.
    debt_overdue.connect(receiver, sender=WalletDebt, weak=False, dispatch_uid="bench")
    try:
        connection.ensure_connection()
        started = time.perf_counter()
        marked = debts_mark_overdue(business_date=BUSINESS_DATE)
        elapsed = time.perf_counter() - started
    finally:
        debt_overdue.disconnect(sender=WalletDebt, dispatch_uid="bench")
    return elapsed, marked, sum(received)


# --- orchestration ---------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    if args.quick:
        args.debts, args.rounds = 100_000, 1
    counts = counts_for(args.debts)
    total = counts["due"] + counts["not_due"] + counts["repaid"] + counts["overdue_before"]
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    bench_url, admin_url, bench_name = bench_urls(database_url, "bench_overdue")
    workdir = Path(tempfile.mkdtemp(prefix="oms-bench-overdue-"))
    env = child_env(bench_url, str(workdir / "var"))
    print(
        f"overdue bench: {counts['due']:,} due debts to mark (of {total:,}: "
        f"{counts['not_due']:,} not yet due, {counts['repaid']:,} repaid, "
        f"{counts['overdue_before']:,} already overdue) in {counts['wallets']:,} wallets, "
        f"business date {BUSINESS_DATE}; {args.rounds} round(s) per variant; "
        f"database {bench_name}",
        flush=True,
    )
    recreate_database(admin_url, bench_name)
    maint = sql_conn = None
    django_ready = False
    try:
        proc = manage(["migrate", "--noinput", "-v", "0"], env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"manage.py migrate failed against {bench_name} (see above)")

        import psycopg2

        maint = psycopg2.connect(bench_url)
        maint.autocommit = True
        cur = maint.cursor()
        print(
            f"PostgreSQL {postgres_version(cur)}, {os.cpu_count()} CPUs, "
            f"python {sys.version.split()[0]}",
            flush=True,
        )
        started = time.perf_counter()
        cur.execute("BEGIN")
        setup_data(cur, counts)
        cur.execute("COMMIT")
        cur.execute(f"ANALYZE {SEED_TABLE}")
        checkpoints = reset_debts(cur, total)
        print(
            f"setup: {time.perf_counter() - started:.1f} s; wallet_walletdebt: "
            f"{relation_sizes(cur)}"
            + ("" if checkpoints else "; no CHECKPOINT privilege, runs start unaligned"),
            flush=True,
        )

        os.environ.update(env)
        sys.path.insert(0, str(REPO))
        import django

        django.setup()
        django_ready = True

        sql_conn = psycopg2.connect(bench_url)
        ours_times: list[float] = []
        sql_times: list[float] = []
        django_sql: list[str] = []
        for round_no in range(1, args.rounds + 1):
            if round_no > 1:
                reset_debts(cur, total)
            start = wal_lsn(cur)
            elapsed, marked, queries = run_ours()
            wal = wal_mb(cur, start)
            verify_marked(cur, f"ours round {round_no}", marked, counts)
            ours_times.append(elapsed)
            django_sql = django_sql or queries

            reset_debts(cur, total)
            start = wal_lsn(cur)
            elapsed, sql_marked = run_sql(sql_conn)
            sql_wal = wal_mb(cur, start)
            verify_marked(cur, f"sql round {round_no}", sql_marked, counts)
            sql_times.append(elapsed)
            print(
                f"round {round_no}: ours {ours_times[-1]:.2f} s ({marked:,} marked, "
                f"WAL {wal:.0f} MB), sql {sql_times[-1]:.2f} s ({sql_marked:,} marked, "
                f"WAL {sql_wal:.0f} MB) (ratio {sql_times[-1] / ours_times[-1]:.3f})",
                flush=True,
            )

        reset_debts(cur, total)  # for the listener round; the plans are on this state too
        print("ours sent:", flush=True)
        for sql in django_sql:
            print(f"  {sql}")
        statements = {
            "ours": next(
                q for q in django_sql if q.lstrip().upper().startswith(("UPDATE", "WITH"))
            ),
            "sql": cur.mogrify(SQL_MARK, (BUSINESS_DATE, BUSINESS_DATE)).decode(),
        }
        for label, statement in statements.items():
            cur.execute(f"EXPLAIN {statement}")
            plan = " / ".join(row[0].strip() for row in cur.fetchall())
            print(f"plan ({label}): {plan}")

        rss_before = peak_rss_mb()
        start = wal_lsn(cur)
        elapsed, marked, received = run_ours_with_listener()
        wal = wal_mb(cur, start)
        verify_marked(cur, "ours + listener", marked, counts)
        if received != counts["due"]:
            raise SystemExit(f"the listener received {received} ids, expected {counts['due']}")
        print(
            f"ours + listener on debt_overdue (informational, 1 round): {elapsed:.2f} s "
            f"({marked:,} marked, {received:,} ids to the listener, WAL {wal:.0f} MB); "
            f"peak RSS {rss_before:.0f} MB before, {peak_rss_mb():.0f} MB after",
            flush=True,
        )

        ours_median = statistics.median(ours_times)
        sql_median = statistics.median(sql_times)
        ratio = sql_median / ours_median
        print(
            f"median: ours {ours_median:.2f} s, sql {sql_median:.2f} s, ratio {ratio:.3f} "
            f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'}); "
            f"ours {counts['due'] / ours_median:,.0f} debts/s",
            flush=True,
        )
    finally:
        if django_ready:
            from django.db import connections

            connections.close_all()
        for conn in (sql_conn, maint):
            if conn is not None:
                conn.close()
        if args.keep_db:
            print(f"kept database {bench_name}")
        else:
            drop_database(admin_url, bench_name)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--debts", type=int, default=1_000_000, help="due debts to mark overdue per run"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100,000 debts, 1 round")
    parser.add_argument("--keep-db", action="store_true", help="leave the bench database")
    args = parser.parse_args(argv)
    if args.debts < 1 or args.rounds < 1:
        parser.error("--debts and --rounds must be positive")
    return args


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
