"""Checkout throughput: our API against a raw-SQL ceiling, on PostgreSQL.

What it measures
    Orders per second for a fixed number of wallet checkouts (3 lines each) at a fixed
    concurrency, two ways, on the same database:

    * **api** — ``POST /api/v1/orders`` against gunicorn (sync workers, ``DJANGO_DEBUG=0``),
      driven from a separate process: one thread per client, each client its own customer,
      token and wallet, a new HTTP connection per request (sync workers close it anyway).
      Every response must be 201; anything else aborts the run with the error bodies.
    * **ceiling** — a separate process with the same number of threads, each with its own
      psycopg2 connection and customer, doing per order, in one transaction, the writes our
      checkout does: lock the wallet and its ledger account, lock the stock rows, insert the
      order and its 3 lines, raise ``reserved``, insert the reservations, write the journal
      entry and its 2 postings, move the 2 account balances (one statement), insert the
      wallet transaction and the audit entry, commit: 11 statements. Same tables,
      constraints, indexes and triggers; no ORM, no HTTP. What a hand-written version would
      not repeat is left out: the merchant account's id is looked up once, its row is locked
      by the balance update itself, and there are no per-request reads (token, customer,
      channel, KYC) nor the re-read of the order for the response.

    It prints orders/s of each and the ratio (api ÷ ceiling); target ≥ 0.25
    (docs/PERFORMANCE.md). Variants are interleaved (api, ceiling, api, ceiling, …) for
    ``--rounds`` rounds and the medians are quoted.

How
    A dedicated database (``<name>_bench`` on the server of ``DATABASE_URL``, default
    ``postgres://postgres@127.0.0.1:5432/oms``) is dropped and recreated, migrated with
    ``manage.py migrate`` and filled through the services (customers, funded wallets, tokens,
    the ``web`` channel, one location, stock for the SKUs). gunicorn is started on a free
    local port and stopped at the end, even on error. After the rounds the script checks the
    row counts and runs ``manage.py ledger_verify``; then it drops the database unless
    ``--keep-db``.

Run from the repository root::

    .venv/bin/python bench/checkout.py            # 2000 orders × 3 rounds, 8 clients, 2 workers
    .venv/bin/python bench/checkout.py --quick    # smoke run: 200 orders, 1 round

``--skus per-client`` gives every client its own 3 SKUs instead of 3 SKUs shared by all
(which serialises every checkout on the same stock rows), to tell CPU cost from contention.

The script also has internal modes (``--setup``, ``--drive``, ``--ceiling``) that it runs
in child processes; they read a JSON plan on stdin and write JSON on stdout.
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
import threading
import time
from pathlib import Path

from benchdb import (
    DEFAULT_DATABASE_URL,
    bench_urls,
    child_env,
    drop_database,
    recreate_database,
    stop_process_group,
    tail,
)

REPO = Path(__file__).resolve().parent.parent
CURRENCY = "EUR"
UNIT_PRICE_MINOR = 100  # 1.00 EUR, quantity 1, no tax: 3.00 EUR an order
LINES_PER_ORDER = 3
OPENING_BALANCE = "1000000.00"  # per customer; far more than any run spends
ON_HAND = 2_000_000_000  # fits the integer column; far more than any run reserves
WARMUP_ORDERS = 40  # per variant, before round 1, not timed
MAX_ERRORS_SHOWN = 10


# --- child mode: --setup (Django) ------------------------------------------------------


def setup_data(clients: int, sku_mode: str) -> dict:
    """Customers with funded wallets and tokens, the web channel, stock. Returns the plan."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()

    from rest_framework.authtoken.models import Token

    from core import clock
    from core.money import Money
    from customers.services import customer_create
    from ledger.models import Purpose
    from ledger.services import system_account
    from oms.models import Channel, ChannelKind, Location, LocationKind, StockItem
    from wallet.models import TransactionKind
    from wallet.services import wallet_credit

    channel = Channel.objects.create(
        code="web", name="Web shop", kind=ChannelKind.WEB, created_at=clock.now()
    )
    location = Location.objects.create(
        code="wh-bench", name="Bench warehouse", kind=LocationKind.WAREHOUSE, priority=10
    )
    shared = [f"BENCH-{k + 1}" for k in range(LINES_PER_ORDER)]
    plan_clients = []
    all_skus: list[str] = []
    for i in range(clients):
        customer = customer_create(
            email=f"bench{i + 1}@example.com",
            password=f"bench-{i + 1}-not-a-secret",
            first_name=f"Bench{i + 1}",
        )
        txn = wallet_credit(
            customer_id=customer.pk,
            amount=Money.parse(OPENING_BALANCE, CURRENCY),
            kind=TransactionKind.TOP_UP,
            idempotency_key="bench-opening",
            note="Bench opening balance",
        )
        token = Token.objects.create(user=customer.user)
        if sku_mode == "shared":
            skus = shared
        else:
            skus = [f"BENCH-C{i + 1}-{k + 1}" for k in range(LINES_PER_ORDER)]
        all_skus.extend(s for s in skus if s not in all_skus)
        plan_clients.append(
            {
                "customer_id": customer.pk,
                "user_id": customer.user_id,
                "token": token.key,
                "wallet_id": txn.wallet_id,
                "account_id": txn.wallet.account_id,
                "skus": skus,
            }
        )
    StockItem.objects.bulk_create(
        StockItem(sku=sku, location=location, on_hand=ON_HAND) for sku in all_skus
    )
    merchant = system_account(Purpose.MERCHANT, CURRENCY)
    return {
        "clients": plan_clients,
        "channel_id": channel.pk,
        "channel_code": channel.code,
        "merchant_account_id": merchant.pk,
        "skus": all_skus,
    }


# --- child mode: --drive (HTTP load generator) -----------------------------------------


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def order_body(skus: list[str]) -> bytes:
    amount = f"{UNIT_PRICE_MINOR // 100}.{UNIT_PRICE_MINOR % 100:02d}"
    return json.dumps(
        {
            "payment_method": "wallet",
            "lines": [
                {
                    "sku": sku,
                    "name": f"Bench item {sku}",
                    "quantity": 1,
                    "unit_price": {"amount": amount, "currency": CURRENCY},
                }
                for sku in skus
            ],
        }
    ).encode()


def drive(plan: dict) -> dict:
    """POST the orders from one thread per client; time the whole batch."""
    host, port = "127.0.0.1", plan["port"]
    clients = plan["clients"][: plan["concurrency"]]
    counts = split(plan["orders"], len(clients))
    ok = [0] * len(clients)
    errors: list[dict] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        c = clients[index]
        body = order_body(c["skus"])
        headers = {
            "Authorization": f"Token {c['token']}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        for _ in range(counts[index]):
            conn = http.client.HTTPConnection(host, port, timeout=120)
            try:
                conn.request("POST", "/api/v1/orders", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status, data = None, f"{type(exc).__name__}: {exc}".encode()
            finally:
                conn.close()
            if status == 201:
                ok[index] += 1
            else:
                with lock:
                    errors.append(
                        {
                            "client": index + 1,
                            "status": status,
                            "body": data.decode(errors="replace"),
                        }
                    )

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(clients))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"ok": sum(ok), "failed": len(errors), "elapsed": elapsed, "errors": errors}


# --- child mode: --ceiling (raw psycopg2) ----------------------------------------------

SQL_LOCK_WALLET = """
SELECT w.id, a.id, a.balance FROM wallet_wallet w JOIN ledger_account a ON a.id = w.account_id
WHERE w.customer_id = %s AND w.currency = %s FOR UPDATE OF w, a
"""
SQL_LOCK_STOCK = """
SELECT s.id, s.sku, s.on_hand - s.reserved FROM oms_stockitem s
JOIN oms_location l ON l.id = s.location_id
WHERE l.active AND s.sku = ANY(%s) ORDER BY s.id FOR UPDATE OF s
"""
SQL_INSERT_ORDER = """
INSERT INTO oms_order (customer_id, channel_id, external_reference, status, currency, total,
    payment_method, placed_by_id, cancel_reason, refunded, created_at, confirmed_at)
VALUES (%s, %s, NULL, 'confirmed', %s, %s, 'wallet', %s, '', 0, now(), now()) RETURNING id
"""
SQL_INSERT_LINES = """
INSERT INTO oms_orderline (order_id, line_no, sku, name, quantity, unit_price, tax, total,
    merchant_category, refunded_quantity)
SELECT %s, *, 0 FROM unnest(%s::smallint[], %s::varchar[], %s::varchar[], %s::integer[],
    %s::bigint[], %s::bigint[], %s::bigint[], %s::varchar[])
RETURNING id, line_no
"""
SQL_RESERVE_STOCK = """
UPDATE oms_stockitem s SET reserved = s.reserved + d.quantity
FROM unnest(%s::bigint[], %s::integer[]) AS d(id, quantity) WHERE s.id = d.id
"""
SQL_INSERT_RESERVATIONS = """
INSERT INTO oms_stockreservation (order_id, line_id, stock_item_id, quantity, status, created_at)
SELECT %s, line_id, stock_item_id, quantity, 'active', now()
FROM unnest(%s::bigint[], %s::bigint[], %s::integer[]) AS r(line_id, stock_item_id, quantity)
"""
SQL_INSERT_ENTRY = """
INSERT INTO ledger_journalentry (created_at, kind, memo, reference_type, reference_id)
VALUES (now(), 'wallet.payment', '', 'oms.order', %s) RETURNING id
"""
SQL_INSERT_POSTINGS = """
INSERT INTO ledger_posting (entry_id, account_id, amount, currency)
VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)
"""
# Both accounts are credit-normal: paying moves the wallet down and the merchant up.
SQL_MOVE_BALANCES = """
UPDATE ledger_account SET balance = balance + CASE id WHEN %s THEN %s WHEN %s THEN %s END
WHERE id IN (%s, %s) RETURNING id, balance
"""
SQL_INSERT_WALLET_TXN = """
INSERT INTO wallet_wallettransaction (wallet_id, kind, direction, amount, balance_after,
    journal_entry_id, reference_type, reference_id, idempotency_key, actor_id, note, created_at)
VALUES (%s, 'payment', 'debit', %s, %s, %s, 'oms.order', %s, NULL, %s, '', now())
"""
SQL_INSERT_AUDIT = """
INSERT INTO core_auditentry (created_at, actor_id, actor_label, action, target_type, target_id,
    changes, note)
VALUES (now(), %s, %s, 'oms.checkout', 'oms.order', %s, %s::jsonb, '')
"""


def ceiling_order(cur, plan: dict, client: dict) -> None:
    """One checkout in hand-written SQL; the caller commits."""
    skus = client["skus"]
    total = UNIT_PRICE_MINOR * len(skus)
    cur.execute(SQL_LOCK_WALLET, (client["customer_id"], CURRENCY))
    wallet_id, account_id, balance = cur.fetchone()
    if balance < total:
        raise RuntimeError(f"wallet {wallet_id} holds {balance}, needs {total}")
    cur.execute(SQL_LOCK_STOCK, (sorted(set(skus)),))
    stock: dict[str, tuple[int, int]] = {}
    for item_id, sku, available in cur.fetchall():
        stock.setdefault(sku, (item_id, available))  # one location: one row per SKU
    for sku in skus:
        if sku not in stock or stock[sku][1] < 1:
            raise RuntimeError(f"out of stock: {sku}")

    cur.execute(
        SQL_INSERT_ORDER,
        (client["customer_id"], plan["channel_id"], CURRENCY, total, client["user_id"]),
    )
    (order_id,) = cur.fetchone()
    n = len(skus)
    cur.execute(
        SQL_INSERT_LINES,
        (
            order_id,
            list(range(1, n + 1)),
            skus,
            [f"Bench item {sku}" for sku in skus],
            [1] * n,
            [UNIT_PRICE_MINOR] * n,
            [0] * n,
            [UNIT_PRICE_MINOR] * n,
            [""] * n,
        ),
    )
    line_ids = {line_no: line_id for line_id, line_no in cur.fetchall()}
    item_ids = [stock[sku][0] for sku in skus]
    cur.execute(SQL_RESERVE_STOCK, (item_ids, [1] * n))
    cur.execute(
        SQL_INSERT_RESERVATIONS,
        (order_id, [line_ids[k + 1] for k in range(n)], item_ids, [1] * n),
    )

    merchant_id = plan["merchant_account_id"]
    cur.execute(SQL_INSERT_ENTRY, (str(order_id),))
    (entry_id,) = cur.fetchone()
    cur.execute(
        SQL_INSERT_POSTINGS,
        (entry_id, account_id, total, CURRENCY, entry_id, merchant_id, -total, CURRENCY),
    )
    cur.execute(
        SQL_MOVE_BALANCES, (account_id, -total, merchant_id, total, account_id, merchant_id)
    )
    balance_after = dict(cur.fetchall())[account_id]
    cur.execute(
        SQL_INSERT_WALLET_TXN,
        (wallet_id, total, balance_after, entry_id, str(order_id), client["user_id"]),
    )
    changes = {
        "total": f"{total // 100}.{total % 100:02d} {CURRENCY}",
        "lines": n,
        "payment_method": "wallet",
    }
    cur.execute(
        SQL_INSERT_AUDIT,
        (client["user_id"], f"channel:{plan['channel_code']}", str(order_id), json.dumps(changes)),
    )


def ceiling(plan: dict) -> dict:
    """The same writes per order through raw psycopg2, one connection per client thread."""
    import psycopg2

    clients = plan["clients"][: plan["concurrency"]]
    counts = split(plan["orders"], len(clients))
    connections = [psycopg2.connect(plan["database_url"]) for _ in clients]
    ok = [0] * len(clients)
    errors: list[dict] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        conn = connections[index]
        try:
            with conn.cursor() as cur:
                for _ in range(counts[index]):
                    ceiling_order(cur, plan, clients[index])
                    conn.commit()
                    ok[index] += 1
        except Exception as exc:
            conn.rollback()
            with lock:
                errors.append(
                    {"client": index + 1, "status": None, "body": f"{type(exc).__name__}: {exc}"}
                )

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(clients))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return {"ok": sum(ok), "failed": len(errors), "elapsed": elapsed, "errors": errors}


# --- orchestration ---------------------------------------------------------------------


def run_child(mode: str, plan: dict, env: dict[str, str]) -> dict:
    """Run this script in ``mode`` in a new process; plan in on stdin, result out on stdout."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), mode],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{mode} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def start_gunicorn(workers: int, port: int, env: dict[str, str], log_path: Path):
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--worker-class",
            "sync",
            "--timeout",
            "120",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so the workers go down with it
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    stop_gunicorn(proc)
    raise SystemExit(f"gunicorn did not answer /healthz in 60 s:\n{tail(log_path)}")


def stop_gunicorn(proc) -> None:
    stop_process_group(proc, grace=20)


def check_result(variant: str, result: dict, expected: int, log_path: Path | None) -> None:
    if result["failed"] == 0 and result["ok"] == expected:
        return
    print(
        f"\n!! {variant}: {result['ok']} of {expected} orders succeeded, {result['failed']} failed",
        flush=True,
    )
    seen: set[tuple] = set()
    for error in result["errors"]:
        key = (error["status"], error["body"])
        if key in seen:
            continue
        seen.add(key)
        count = sum(1 for e in result["errors"] if (e["status"], e["body"]) == key)
        print(f"  {count}× status {error['status']} (client {error['client']}): {error['body']}")
        if len(seen) >= MAX_ERRORS_SHOWN:
            break
    if log_path is not None:
        print(f"\n-- gunicorn log (tail) --\n{tail(log_path)}")
    raise SystemExit(f"{variant}: not every order succeeded")


def verify(database_url: str, plan: dict, expected: int, env: dict[str, str]) -> None:
    """Row counts match the orders placed; the ledger is consistent."""
    import psycopg2

    n = LINES_PER_ORDER
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            checks = {
                "orders": ("SELECT count(*) FROM oms_order", expected),
                "order lines": ("SELECT count(*) FROM oms_orderline", expected * n),
                "reservations": ("SELECT count(*) FROM oms_stockreservation", expected * n),
                "units reserved": ("SELECT sum(reserved) FROM oms_stockitem", expected * n),
                "wallet payments": (
                    "SELECT count(*) FROM wallet_wallettransaction WHERE kind = 'payment'",
                    expected,
                ),
                "merchant balance": (
                    f"SELECT balance FROM ledger_account WHERE id = {plan['merchant_account_id']}",
                    expected * n * UNIT_PRICE_MINOR,
                ),
                "checkout audit rows": (
                    "SELECT count(*) FROM core_auditentry WHERE action = 'oms.checkout'",
                    expected,
                ),
            }
            bad = []
            for label, (sql, want) in checks.items():
                cur.execute(sql)
                got = cur.fetchone()[0]
                if got != want:
                    bad.append(f"{label}: {got}, expected {want}")
    finally:
        conn.close()
    print(f"row counts: {'OK' if not bad else 'MISMATCH: ' + '; '.join(bad)}")
    proc = manage(["ledger_verify"], env)
    print(f"ledger_verify (exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()}")
    if bad or proc.returncode != 0:
        raise SystemExit("verification failed")


def postgres_version(database_url: str) -> str:
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return cur.fetchone()[0]
    finally:
        conn.close()


def rate(result: dict) -> float:
    return result["ok"] / result["elapsed"]


def main(args: argparse.Namespace) -> None:
    if args.quick:
        args.orders, args.rounds = 200, 1
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    bench_url, admin_url, bench_name = bench_urls(database_url, "bench")
    workdir = Path(tempfile.mkdtemp(prefix="oms-bench-"))
    env = child_env(bench_url, str(workdir / "var"))
    log_path = workdir / "gunicorn.log"
    gunicorn = None
    print(
        f"checkout bench: {args.orders} orders × {args.rounds} rounds per variant, "
        f"{args.concurrency} clients, gunicorn {args.workers} sync workers, "
        f"{LINES_PER_ORDER} lines an order, SKUs {args.skus}; database {bench_name}",
        flush=True,
    )
    recreate_database(admin_url, bench_name)
    try:
        proc = manage(["migrate", "--noinput", "-v", "0"], env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"manage.py migrate failed against {bench_name} (see above)")
        plan = run_child("--setup", {"clients": args.concurrency, "skus": args.skus}, env)
        plan.update(concurrency=args.concurrency, database_url=bench_url)
        print(
            f"PostgreSQL {postgres_version(bench_url)}, {os.cpu_count()} CPUs, "
            f"python {sys.version.split()[0]}",
            flush=True,
        )

        port = free_port()
        gunicorn = start_gunicorn(args.workers, port, env, log_path)
        plan["port"] = port

        warm = min(WARMUP_ORDERS, args.orders)
        placed = 0
        result = run_child("--drive", {**plan, "orders": warm}, env)
        check_result("api warm-up", result, warm, log_path)
        result = run_child("--ceiling", {**plan, "orders": warm}, env)
        check_result("ceiling warm-up", result, warm, None)
        placed += 2 * warm

        api_rates: list[float] = []
        ceiling_rates: list[float] = []
        for round_no in range(1, args.rounds + 1):
            result = run_child("--drive", {**plan, "orders": args.orders}, env)
            check_result(f"api round {round_no}", result, args.orders, log_path)
            api_rates.append(rate(result))
            result = run_child("--ceiling", {**plan, "orders": args.orders}, env)
            check_result(f"ceiling round {round_no}", result, args.orders, None)
            ceiling_rates.append(rate(result))
            placed += 2 * args.orders
            print(
                f"round {round_no}: api {api_rates[-1]:.1f} orders/s, "
                f"ceiling {ceiling_rates[-1]:.1f} orders/s "
                f"(ratio {api_rates[-1] / ceiling_rates[-1]:.3f})",
                flush=True,
            )
        stop_gunicorn(gunicorn)
        gunicorn = None

        api_median = statistics.median(api_rates)
        ceiling_median = statistics.median(ceiling_rates)
        ratio = api_median / ceiling_median
        print(
            f"median: api {api_median:.1f} orders/s, ceiling {ceiling_median:.1f} orders/s, "
            f"ratio {ratio:.3f} (target >= 0.25: {'met' if ratio >= 0.25 else 'NOT met'})",
            flush=True,
        )
        verify(bench_url, plan, placed, env)
    finally:
        stop_gunicorn(gunicorn)
        if args.keep_db:
            print(f"kept database {bench_name}; gunicorn log in {log_path}")
        else:
            drop_database(admin_url, bench_name)
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per variant per round")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 orders, 1 round")
    parser.add_argument("--keep-db", action="store_true", help="leave the bench database")
    parser.add_argument(
        "--skus",
        choices=("shared", "per-client"),
        default="shared",
        help="3 SKUs shared by every client (default) or 3 of its own per client",
    )
    mode = parser.add_mutually_exclusive_group()
    for flag in ("--setup", "--drive", "--ceiling"):
        mode.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.orders < 1 or args.concurrency < 1 or args.rounds < 1 or args.workers < 1:
        parser.error("--orders, --concurrency, --rounds and --workers must be positive")
    return args


if __name__ == "__main__":
    options = parse_args(sys.argv[1:])
    if options.setup or options.drive or options.ceiling:
        child_plan = json.loads(sys.stdin.read())
        if options.setup:
            output = setup_data(child_plan["clients"], child_plan["skus"])
        elif options.drive:
            output = drive(child_plan)
        else:
            output = ceiling(child_plan)
        print(json.dumps(output))
    else:
        main(options)
