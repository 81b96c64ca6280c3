"""The daily debit run: our run through Celery against one set-based SQL statement.

What it measures
    For ``--sizes`` (default 10,000 and 100,000) installments due on one business date:

    Each size runs ``--rounds`` rounds (default 3), and each round runs ours, then the
    ceiling, each on a fresh copy of the same data (A B A B A B: the machine is shared and
    noisy, so the two sides of a ratio are measured close together, and medians are
    quoted):

    * **ours** — ``collections_.debits.debit_run_start(business_date=…)`` called in this
      process; its chunks (``CollectionsSettings.chunk_size`` = 1,000 requests each) are
      worked by 2 Celery worker processes (``--pool solo``, a real Redis broker) that charge
      every installment off-session (``payment_open_many`` then ``payment_send_many``: one
      batch request per chunk) against the payment sandbox (a separate process, zero
      latency) and record the outcomes. Timed from the call until the run is finished
      (every chunk done). Installments/s = due ÷ seconds.
    * **ceiling** — ONE SQL statement (data-modifying CTEs) that selects the same due
      requests, marks their installments paid and the requests settled, inserts one journal
      entry and two postings per installment (gateway clearing ← receivable) and moves the
      account balances; then ``COMMIT``. No provider, no attempts, no payment records: the
      database's floor for the bookkeeping alone.

    Each of the two starts right after a ``CHECKPOINT``, so that neither pays for writing
    out what came before it (the data set up, the ceiling's copy of the database).

    It prints, per round, installments/s of each and their ratio (ours ÷ ceiling); per size,
    the medians; and against the targets: the largest size's median ratio (target ≥ 0.3),
    Celery tasks ÷ installments (chunk tasks + the run; target ≤ 0.002), and the ratio of
    the worker processes' peak RSS (``VmHWM``, the highest of the rounds) at the largest size
    to the smallest's (target ≤ 1.2). Figures below target are printed as they are, marked. To
    tell where the time goes, it also prints the CPU per installment of the workers, the
    sandbox and PostgreSQL, and the write-ahead log each side wrote per installment (with
    the checkpoints that fell inside it): the database's work grows with the rows and index
    entries written, which the log counts.

    After ours it checks: every due installment paid, one captured sandbox charge per
    installment and per key (the sandbox's own log), one attempt each, the run's chunk
    counters, and ``manage.py ledger_verify``. After the ceiling: the same count of paid
    installments and entries.

Data
    ``size`` plans of one installment each (principal 10.00-99.99 EUR, 0 % interest), due
    on the business date, one customer per 10 plans (users, customers, receivable ledger
    accounts), written with set-based SQL (``generate_series``); plus a tenth as many
    installments due the next day, which the run must skip.

How
    The data of each size is set up once in a database of its own
    (``<name>_bench_collections_data`` on the server of ``DATABASE_URL``); each round copies
    it (``CREATE DATABASE … TEMPLATE``) to ``<name>_bench_collections`` for ours, with a
    fresh sandbox and fresh workers, and to ``<name>_bench_collections_ceiling`` for the
    ceiling. Everything is dropped at the end (``--keep-db`` keeps the last copy ours
    ran on, and the logs); the broker is ``CELERY_BROKER_URL`` (default
    ``redis://127.0.0.1:6379/5``) on a queue of this run's own.

Run from the repository root::

    .venv/bin/python bench/debit_run.py            # 10,000 then 100,000 installments
    .venv/bin/python bench/debit_run.py --quick    # smoke run: 1,000 then 5,000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from benchdb import (
    DEFAULT_DATABASE_URL,
    _admin,
    bench_urls,
    child_env,
    drop_database,
    recreate_database,
    stop_process_group,
    tail,
)

REPO = Path(__file__).resolve().parent.parent
BUSINESS_DATE = date(2026, 7, 1)
PLANS_PER_CUSTOMER = 10
WORKERS = 2
TARGET_RATIO = 0.3
TARGET_TASKS = 0.002
TARGET_RSS = 1.2
DEFAULT_BROKER = "redis://127.0.0.1:6379/5"


def manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- data ------------------------------------------------------------------------------

_ZERO = {
    "character varying": "''",
    "text": "''",
    "bigint": "0",
    "integer": "0",
    "smallint": "0",
    "numeric": "0",
    "boolean": "false",
    "jsonb": "'{}'::jsonb",
    "timestamp with time zone": "now()",
    "date": "current_date",
}


def insert_select(cur, table: str, values: dict[str, str], source: str, params: dict) -> int:
    """``INSERT INTO table SELECT … FROM source``; required columns not in ``values`` get
    their type's zero, so columns other apps add later need no change here."""
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s AND is_nullable = 'NO' AND column_default IS NULL",
        (table,),
    )
    columns = dict(values)
    for name, data_type in cur.fetchall():
        if name not in columns and name != "id":
            columns[name] = _ZERO[data_type]
    names = ", ".join(columns)
    exprs = ", ".join(columns.values())
    cur.execute(f"INSERT INTO {table} ({names}) SELECT {exprs} FROM {source}", params)
    return cur.rowcount


def setup_data(cur, size: int, tz: str, receivable: tuple[str, str]) -> None:
    """Users, customers, receivable accounts, a product, applications, plans, installments
    and debit requests: ``size`` due on the business date and a tenth due the day after."""
    customers = max(1, size // PLANS_PER_CUSTOMER)
    extra = size // 10
    purpose, normal_side = receivable
    params = {
        "n": customers,
        "plans": size + extra,
        "due": size,
        "day": BUSINESS_DATE,
        "tz": tz,
        "purpose": purpose,
        "side": normal_side,
    }
    insert_select(
        cur,
        "auth_user",
        {
            "id": "g",
            "password": "'!bench'",
            "is_superuser": "false",
            "username": "'bench-debit-' || g",
            "email": "'bench-debit-' || g || '@example.com'",
            "is_staff": "false",
            "is_active": "true",
            "date_joined": "now()",
        },
        "generate_series(1, %(n)s) AS g",
        params,
    )
    insert_select(
        cur,
        "customers_customer",
        {"id": "g", "user_id": "g", "tier": "'standard'", "kyc_status": "'approved'"},
        "generate_series(1, %(n)s) AS g",
        params,
    )
    insert_select(
        cur,
        "ledger_account",
        {
            "id": "g",
            "code": "'installments:' || g || ':EUR'",
            "purpose": "%(purpose)s",
            "currency": "'EUR'",
            "normal_side": "%(side)s",
            "non_negative": "false",
            "balance": "0",
            "customer_id": "g",
        },
        "generate_series(1, %(n)s) AS g",
        params,
    )
    insert_select(
        cur,
        "bnpl_planproduct",
        {
            "id": "1",
            "code": "'bench'",
            "name": "'Bench'",
            "active": "true",
            "currency": "'EUR'",
            "installment_count": "1",
            "frequency": "'monthly'",
            "down_payment": "'none'",
            "interest_method": "'zero'",
            "refund_allocation": "'last_first'",
            "decider": "'internal'",
            "max_amount": "10000000",
            "late_fee_cap_plan_percent": "25",
        },
        "(SELECT 1) AS one",
        params,
    )
    # k < due: due on the business date; the rest the day after (must be skipped).
    source = (
        "(SELECT k, 1 + (k %% %(n)s) AS customer_id, 1000 + (k::bigint * 7919) %% 9000 AS amount,"
        " CASE WHEN k <= %(due)s THEN %(day)s::date ELSE %(day)s::date + 1 END AS due_date"
        " FROM generate_series(1, %(plans)s) AS k) AS s"
    )
    insert_select(
        cur,
        "bnpl_creditapplication",
        {
            "id": "k",
            "customer_id": "customer_id",
            "product_id": "1",
            "reference_type": "'bench.order'",
            "reference_id": "k::text",
            "currency": "'EUR'",
            "amount": "amount",
            "terms": "'{}'::jsonb",
            "payment_method": "'pm_card_visa'",
            "status": "'approved'",
            "decided_by": "'internal'",
            "reasons": "'[]'::jsonb",
            "created_at": "now()",
            "expires_at": "now()",
        },
        source,
        params,
    )
    insert_select(
        cur,
        "bnpl_plan",
        {
            "id": "k",
            "application_id": "k",
            "customer_id": "customer_id",
            "product_id": "1",
            "reference_type": "'bench.order'",
            "reference_id": "k::text",
            "currency": "'EUR'",
            "amount": "amount",
            "down_payment": "0",
            "terms": "'{}'::jsonb",
            "status": "'active'",
            "payment_method": "'pm_card_visa'",
            "funded_by": "'internal'",
            "start_date": "due_date - 30",
            "debits_paused": "false",
            "created_at": "now()",
        },
        source,
        params,
    )
    insert_select(
        cur,
        "bnpl_installment",
        {
            "id": "k",
            "plan_id": "k",
            "number": "1",
            "due_date": "due_date",
            "original_due_date": "due_date",
            "principal": "amount",
            "status": "'scheduled'",
        },
        source,
        params,
    )
    insert_select(
        cur,
        "bnpl_debitrequest",
        {
            "id": "k",
            "installment_id": "k",
            "plan_id": "k",
            "payment_method": "'pm_card_visa'",
            "idempotency_key": "'bnpl:plan:' || k || ':installment:1'",
            "status": "'scheduled'",
            "next_attempt_at": "(due_date::timestamp AT TIME ZONE %(tz)s)",
            "attempts_made": "0",
            "created_at": "now()",
        },
        source,
        params,
    )
    for table in (
        "auth_user",
        "customers_customer",
        "ledger_account",
        "bnpl_planproduct",
        "bnpl_creditapplication",
        "bnpl_plan",
        "bnpl_installment",
        "bnpl_debitrequest",
    ):
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )


# --- the ceiling ---------------------------------------------------------------------

CEILING_SQL = """
WITH due AS (
    SELECT r.id AS request_id, i.id AS installment_id,
           i.principal + i.interest + i.fee + i.late_fee
             - i.paid_principal - i.paid_interest - i.paid_fee - i.paid_late_fee AS amount,
           i.principal - i.paid_principal AS principal,
           a.id AS receivable_id
    FROM bnpl_debitrequest r
    JOIN bnpl_installment i ON i.id = r.installment_id
    JOIN bnpl_plan p ON p.id = r.plan_id
    JOIN ledger_account a ON a.code = 'installments:' || p.customer_id || ':EUR'
    WHERE r.status = 'scheduled' AND r.next_attempt_at < %(cutoff)s
      AND p.status = 'active' AND NOT p.debits_paused
), paid AS (
    UPDATE bnpl_installment i
    SET paid_principal = i.principal, paid_interest = i.interest, paid_fee = i.fee,
        paid_late_fee = i.late_fee, status = 'paid', paid_at = now()
    FROM due WHERE i.id = due.installment_id
    RETURNING i.id
), settled AS (
    UPDATE bnpl_debitrequest r
    SET status = 'settled', next_attempt_at = NULL, attempts_made = r.attempts_made + 1
    FROM due WHERE r.id = due.request_id
    RETURNING r.id
), entries AS (
    INSERT INTO ledger_journalentry (created_at, kind, memo, reference_type, reference_id)
    SELECT now(), 'bnpl.installment_paid', '', 'bnpl.installment', due.installment_id::text
    FROM due
    RETURNING id, reference_id
), legs AS (
    SELECT e.id AS entry_id, %(clearing)s::bigint AS account_id, d.amount AS amount
    FROM entries e JOIN due d ON d.installment_id::text = e.reference_id
    UNION ALL
    SELECT e.id, d.receivable_id, -d.principal
    FROM entries e JOIN due d ON d.installment_id::text = e.reference_id
), postings AS (
    INSERT INTO ledger_posting (amount, currency, account_id, entry_id)
    SELECT amount, 'EUR', account_id, entry_id FROM legs
    RETURNING account_id, amount
), balances AS (
    UPDATE ledger_account a
    SET balance = a.balance
        + CASE a.normal_side WHEN 'debit' THEN s.delta ELSE -s.delta END
    FROM (SELECT account_id, sum(amount) AS delta FROM postings GROUP BY account_id) s
    WHERE a.id = s.account_id
    RETURNING a.id
)
SELECT (SELECT count(*) FROM paid), (SELECT count(*) FROM settled),
       (SELECT count(*) FROM entries), (SELECT count(*) FROM balances)
"""


def run_ceiling(url: str, cutoff: datetime, clearing_id: int) -> tuple[float, tuple, tuple]:
    """The ceiling's seconds, its counts and the server's writes meanwhile
    (``server_writes``)."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            checkpoint(url)
            writes = server_writes(url)
            started = time.perf_counter()
            cur.execute(CEILING_SQL, {"cutoff": cutoff, "clearing": clearing_id})
            counts = cur.fetchone()
            conn.commit()
            elapsed = time.perf_counter() - started
            after = server_writes(url)
            return elapsed, counts, (after[0] - writes[0], after[1] - writes[1])
    finally:
        conn.close()


def checkpoint(url: str) -> None:
    """Write every dirty page now (``CHECKPOINT``), so that ours and the ceiling each start
    just after one: neither then pays for the writes of what came before it (the data set
    up, the ceiling's copy of the database) or inherits a log about to force a checkpoint
    in the middle of its run. Needs a superuser (or ``pg_checkpoint``); skipped with a
    word if refused."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    except psycopg2.errors.InsufficientPrivilege:
        print("  (CHECKPOINT refused: measuring without one)", flush=True)
    finally:
        conn.close()


def server_writes(url: str) -> tuple[int, int]:
    """The server's write-ahead log position (bytes) and checkpoints so far: the difference
    across a measurement is what it wrote, and whether a checkpoint fell inside it (after
    one, each page's first change is logged whole)."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_current_wal_lsn() - '0/0', checkpoints_timed + checkpoints_req "
                "FROM pg_stat_bgwriter"
            )
            wal, checkpoints = cur.fetchone()
            return int(wal), int(checkpoints)
    finally:
        conn.close()


# --- processes -----------------------------------------------------------------------


def sandbox_call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return json.loads(response.read())
    finally:
        conn.close()


def start_sandbox(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_payment_sandbox", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the sandbox exited:\n{tail(log_path)}")
        try:
            if sandbox_call(port, "GET", "/card/v1/health").get("status") == "ok":
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop_process_group(proc)
    raise SystemExit(f"the sandbox did not start:\n{tail(log_path)}")


def start_worker(n: int, queue: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool",
                "solo",
                "--queues",
                queue,
                "--hostname",
                f"bench{n}@%h",
                "--loglevel",
                "INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(log_path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a worker exited:\n{tail(log_path)}")
        if " ready." in log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise SystemExit(f"a worker did not start:\n{tail(log_path)}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds PostgreSQL has used on this machine: every live server process's own,
    plus what the postmaster's exited children (backends closed after a task) used."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(int(f[11]) + int(f[12]) for f in stats.values())
    for f in stats.values():
        if int(f[1]) not in stats:  # the postmaster: its parent is not PostgreSQL
            total += int(f[13]) + int(f[14])
    return total / tick


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def witness_problems(port: int, size: int) -> list[str]:
    """The sandbox's own log: one captured charge per installment, each key once."""
    charges = sandbox_call(port, "GET", "/sandbox/charges")["data"]
    captured = [c for c in charges if c["status"] == "captured"]
    problems = []
    if len(captured) != size or len(charges) != size:
        problems.append(f"sandbox: {len(captured)} captured of {len(charges)}, {size} due")
    if len({c["reference"] for c in captured}) != len(captured):
        problems.append("sandbox: an installment was charged twice")
    if len({c["idempotency_key"] for c in charges}) != len(charges):
        problems.append("sandbox: a key was charged twice")
    return problems


# --- one size ------------------------------------------------------------------------


def prepare_data(size: int, database_url: str, env: dict[str, str]) -> dict:
    """The data of one size, set up once in a database of its own that every round copies
    (``CREATE DATABASE … TEMPLATE``): users, customers, plans, installments due, their
    debit requests, the card processor's account."""
    import psycopg2

    data_url, admin_url, data_name = bench_urls(database_url, "bench_collections_data")
    recreate_database(admin_url, data_name)
    proc = manage(["migrate", "--noinput", "-v", "0"], {**env, "DATABASE_URL": data_url})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"manage.py migrate failed against {data_name}")

    from django.conf import settings

    from ledger.models import NORMAL_SIDE, Purpose

    purpose = Purpose.CUSTOMER_BNPL_RECEIVABLE
    started = time.perf_counter()
    conn = psycopg2.connect(data_url)
    with conn.cursor() as cur:
        setup_data(cur, size, settings.BUSINESS_TIME_ZONE, (purpose, NORMAL_SIDE[purpose]))
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()

    from django.db import connections

    from bnpl.services import plan_receivable
    from collections_ import selectors
    from core import clock
    from ledger.services import system_account
    from payments import crypto
    from payments.models import Provider, ProviderAccount

    connections["default"].settings_dict["NAME"] = data_name
    connections.close_all()
    try:
        assert plan_receivable(customer_id=1, currency="EUR").pk == 1, "receivable code changed"
        clearing_id = system_account(Purpose.GATEWAY_CLEARING, "EUR").pk
        now = clock.now()
        account = ProviderAccount.objects.create(
            provider=Provider.CARD,
            enabled=True,
            base_url="http://127.0.0.1:1/card",  # each round's sandbox port is set on its copy
            credentials_encrypted=crypto.encrypt({"secret": "sk_bench"}),
            created_at=now,
            updated_at=now,
        )
        selectors.collections_settings()
    finally:
        connections.close_all()
        connections["default"].settings_dict["NAME"] = urlsplit(env["DATABASE_URL"]).path[1:]
    print(f"  setup {size:,}: {time.perf_counter() - started:.1f} s", flush=True)
    return {
        "admin_url": admin_url,
        "name": data_name,
        "clearing_id": clearing_id,
        "account_id": account.pk,
    }


def copy_of(data: dict, name: str) -> None:
    """A fresh copy of the size's data under ``name``."""
    drop_database(data["admin_url"], name)
    _admin(data["admin_url"], f'CREATE DATABASE "{name}" TEMPLATE "{data["name"]}"')


def run_ours(size: int, args, data: dict, env: dict, workdir: Path, label: str) -> dict:
    """Ours on a fresh copy: the sandbox and 2 workers started for it, the run timed, then
    every check."""
    import psycopg2
    from celery import current_app
    from django.db import connections

    from collections_ import debits
    from collections_.models import DebitAttempt, DebitRun

    bench_url = env["DATABASE_URL"]
    bench_name = urlsplit(bench_url).path[1:]
    connections.close_all()
    copy_of(data, bench_name)
    port = free_port()
    conn = psycopg2.connect(bench_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE payments_provideraccount SET base_url = %s WHERE id = %s",
            (f"http://127.0.0.1:{port}/card", data["account_id"]),
        )
    conn.close()

    queue = f"bench-collections-{os.getpid()}-{label}"
    current_app.conf.task_default_queue = queue
    sandbox = None
    procs: list[subprocess.Popen] = []
    try:
        sandbox = start_sandbox(port, env, workdir / f"sandbox-{label}.log")
        for n in range(WORKERS):
            procs.append(start_worker(n, queue, env, workdir / f"worker-{label}-{n}.log"))
        for n, proc in enumerate(procs):
            wait_ready(workdir / f"worker-{label}-{n}.log", proc)

        cpu_before = sum(process_cpu_seconds(p.pid) for p in procs)
        cpu_sandbox_before = process_cpu_seconds(sandbox.pid)
        checkpoint(bench_url)
        cpu_pg_before = postgres_cpu_seconds()
        writes_before = server_writes(bench_url)
        started = time.perf_counter()
        run = debits.debit_run_start(business_date=BUSINESS_DATE)
        deadline = time.monotonic() + args.timeout
        while True:
            state = DebitRun.objects.values("status", "chunks_done").get(pk=run.pk)
            if state["status"] == "finished":
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker died during the run")
            if time.monotonic() > deadline:
                raise SystemExit(f"the run did not finish in {args.timeout} s: {state}")
            time.sleep(0.05)
        ours = time.perf_counter() - started
        rss = [peak_rss_mb(p.pid) for p in procs]
        cpu_pg = postgres_cpu_seconds() - cpu_pg_before
        writes = server_writes(bench_url)
        cpu = sum(process_cpu_seconds(p.pid) for p in procs) - cpu_before
        cpu_sandbox = process_cpu_seconds(sandbox.pid) - cpu_sandbox_before
        problems = witness_problems(port, size)
    finally:
        for proc in procs:
            stop_process_group(proc)
        stop_process_group(sandbox)

    run.refresh_from_db()
    if run.due_count != size or run.chunks_done != run.chunks_total:
        problems.append(f"run: due {run.due_count}, chunks {run.chunks_done}/{run.chunks_total}")
    attempts = DebitAttempt.objects.filter(status="succeeded").count()
    if attempts != size or DebitAttempt.objects.count() != size:
        problems.append(f"{attempts} succeeded attempts of {DebitAttempt.objects.count()}")
    from bnpl.models import Installment

    paid = Installment.objects.filter(status="paid").count()
    if paid != size:
        problems.append(f"{paid} installments paid, {size} due")
    connections.close_all()
    verify = manage(["ledger_verify"], env)
    if verify.returncode != 0:
        problems.append(f"ledger_verify: {verify.stdout[-500:]} {verify.stderr[-500:]}")
    return {
        "seconds": ours,
        "tasks": run.chunks_total + 1,
        "rss": max(rss),
        "cpu_ms": 1000 * cpu / size,
        "cpu_sandbox_ms": 1000 * cpu_sandbox / size,
        "cpu_pg_ms": 1000 * cpu_pg / size,
        "wal_kb": (writes[0] - writes_before[0]) / 1024 / size,
        "checkpoints": writes[1] - writes_before[1],
        "problems": problems,
    }


def run_ceiling_round(size: int, data: dict, database_url: str) -> dict:
    """The ceiling on a fresh copy of the same data."""
    from django.conf import settings

    ceiling_url, _, ceiling_name = bench_urls(database_url, "bench_collections_ceiling")
    copy_of(data, ceiling_name)
    tz = ZoneInfo(settings.BUSINESS_TIME_ZONE)
    cutoff = datetime.combine(BUSINESS_DATE + timedelta(days=1), datetime.min.time(), tz)
    seconds, counts, writes = run_ceiling(ceiling_url, cutoff, data["clearing_id"])
    drop_database(data["admin_url"], ceiling_name)
    problems = []
    if counts[0] != size or counts[2] != size:
        problems.append(f"ceiling marked {counts[0]} and wrote {counts[2]} entries, not {size}")
    return {
        "seconds": seconds,
        "wal_kb": writes[0] / 1024 / size,
        "checkpoints": writes[1],
        "problems": problems,
    }


def one_size(size: int, args, database_url: str, env: dict, workdir: Path) -> dict:
    """``args.rounds`` rounds, each ours then the ceiling (A B A B …), each on a fresh copy
    of the same data; the medians."""
    data = prepare_data(size, database_url, env)
    rounds = []
    try:
        for number in range(1, args.rounds + 1):
            ours = run_ours(size, args, data, env, workdir, f"{size}-{number}")
            ceiling = run_ceiling_round(size, data, database_url)
            ratio = ceiling["seconds"] / ours["seconds"]
            rounds.append({"ours": ours, "ceiling": ceiling, "ratio": ratio})
            print(
                f"  {size:,} round {number}: ours {ours['seconds']:.1f} s "
                f"({size / ours['seconds']:,.0f}/s), ceiling {ceiling['seconds']:.2f} s "
                f"({size / ceiling['seconds']:,.0f}/s), ratio {ratio:.3f}; CPU per "
                f"installment: workers {ours['cpu_ms']:.2f} ms, sandbox "
                f"{ours['cpu_sandbox_ms']:.2f} ms, PostgreSQL {ours['cpu_pg_ms']:.2f} ms; "
                f"WAL per installment: ours {ours['wal_kb']:.2f} kB "
                f"({ours['checkpoints']} checkpoints), ceiling {ceiling['wal_kb']:.2f} kB "
                f"({ceiling['checkpoints']} checkpoints)",
                flush=True,
            )
            for problem in ours["problems"] + ceiling["problems"]:
                print(f"  PROBLEM: {problem}", flush=True)
    finally:
        if not args.keep_db:
            drop_database(data["admin_url"], urlsplit(env["DATABASE_URL"]).path[1:])
            drop_database(data["admin_url"], data["name"])
    return {
        "size": size,
        "ours_rate": statistics.median(size / r["ours"]["seconds"] for r in rounds),
        "ceiling_rate": statistics.median(size / r["ceiling"]["seconds"] for r in rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "ratios": [r["ratio"] for r in rounds],
        "tasks": max(r["ours"]["tasks"] for r in rounds),
        "rss": max(r["ours"]["rss"] for r in rounds),
        "problems": [p for r in rounds for p in r["ours"]["problems"] + r["ceiling"]["problems"]],
    }


def main(args: argparse.Namespace) -> None:
    if args.quick:
        args.sizes = [1_000, 5_000]
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    broker = os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER
    if not broker.startswith(("redis://", "amqp://")):
        raise SystemExit(f"needs a real broker (Redis or RabbitMQ), not {broker!r}")
    workdir = Path(tempfile.mkdtemp(prefix="oms-bench-collections-"))
    if not os.environ.get("PAYMENTS_ENCRYPTION_KEY"):
        from cryptography.fernet import Fernet

        os.environ["PAYMENTS_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    bench_url, _, _ = bench_urls(database_url, "bench_collections")
    env = child_env(bench_url, str(workdir / "var"))
    env["PAYMENTS_ENCRYPTION_KEY"] = os.environ["PAYMENTS_ENCRYPTION_KEY"]
    env["CELERY_BROKER_URL"] = broker
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    print(
        f"debit-run bench: sizes {', '.join(f'{s:,}' for s in args.sizes)}, {args.rounds} "
        f"rounds each (ours then the ceiling, on fresh copies of the data); {WORKERS} Celery "
        f"workers (solo pool), broker {broker}, sandbox at zero latency; "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        flush=True,
    )
    results = []
    try:
        for size in args.sizes:
            results.append(one_size(size, args, database_url, env, workdir))
            r = results[-1]
            print(
                f"  {size:,} median of {args.rounds}: ours {r['ours_rate']:,.0f}/s, ceiling "
                f"{r['ceiling_rate']:,.0f}/s, ratio {r['ratio']:.3f} (rounds: "
                f"{', '.join(f'{x:.3f}' for x in r['ratios'])}); tasks {r['tasks']}, peak "
                f"worker RSS {r['rss']:.0f} MB",
                flush=True,
            )
    finally:
        if not args.keep_db:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}")

    largest, smallest = results[-1], results[0]
    tasks = largest["tasks"] / largest["size"]
    rss_ratio = largest["rss"] / smallest["rss"]

    def verdict(ok: bool) -> str:
        return "meets target" if ok else "BELOW TARGET"

    print(
        f"installments/s at {largest['size']:,} (medians): ours {largest['ours_rate']:,.0f}, "
        f"ceiling {largest['ceiling_rate']:,.0f}"
    )
    print(
        f"ratio ours ÷ ceiling (median of {args.rounds} rounds): {largest['ratio']:.3f} "
        f"(target ≥ {TARGET_RATIO}) — {verdict(largest['ratio'] >= TARGET_RATIO)}"
    )
    print(
        f"tasks ÷ installments: {tasks:.4f} (target ≤ {TARGET_TASKS}) — "
        f"{verdict(tasks <= TARGET_TASKS)}"
    )
    print(
        f"peak worker RSS: {smallest['rss']:.0f} MB at {smallest['size']:,}, "
        f"{largest['rss']:.0f} MB at {largest['size']:,}: ratio {rss_ratio:.2f} "
        f"(target ≤ {TARGET_RSS}) — {verdict(rss_ratio <= TARGET_RSS)}"
    )
    if any(r["problems"] for r in results):
        raise SystemExit("checks failed (see PROBLEM lines)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--quick", action="store_true", help="1,000 then 5,000")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (medians)")
    parser.add_argument("--keep-db", action="store_true", help="keep the last round's copy")
    main(parser.parse_args())
