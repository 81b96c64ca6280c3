"""`make fuzz`: schemathesis against the live app, as a customer, a channel and anonymous.

Starts the payment sandbox and gunicorn on free ports over a fresh PostgreSQL database
(``<DATABASE_URL's name>_fuzz``, dropped and created), seeds the demo data (customers,
channel keys, stock, a card processor account pointed at the sandbox) plus a large wallet
balance, then runs every check and phase (examples, coverage, fuzzing, stateful) for each
caller within FUZZ_SECONDS (default 120) in all. Prints how many orders were placed (201 on
POST /api/v1/orders) and exits non-zero if any check failed or no order was placed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ST = str(Path(PY).with_name("st"))
SECONDS = int(os.environ.get("FUZZ_SECONDS", "120"))
SEED = os.environ.get("FUZZ_SEED", "12")

# Schemathesis' own defaults, plus what a valid request may still meet at run time: 422 is a
# business rule on a well-formed request (a balance that does not cover the cart, a
# withdrawal while in debt). A 400 on schema-valid data is drift between the schema and the
# server, so it fails the run, except on the operations below, whose 400s are rules no JSON
# schema can state.
SCHEMA_LESS_400 = {
    "auth_token_obtain": "whether the email and password match an account",
    "orders_checkout": "one currency per order; the channel named must exist",
    "customers_sign_up": "password strength (Django's validators)",
    "wallet_withdraw": "an IBAN's mod-97 check digits",
    "payment_methods_create": "a card number's Luhn digit; an expiry not in the past",
    "wallet_bnpl_eligibility": "the amount's decimals depend on the currency parameter",
    "bnpl_installments_pay": "no more than the installment owes (bnpl.overpayment)",
}
# Error feedback (learning constraints from 4xx bodies) reads the envelope's
# error.fields ("lines.0.quantity") as properties of the request body, then expects a body
# without them to be refused: a false alarm, so it is off; every check stays on.
ACCEPTED = ["2xx", "401", "403", "404", "409", "422", "429"]
CONFIG = f"""
[checks.positive_data_acceptance]
expected-statuses = {json.dumps(ACCEPTED)}

[phases.fuzzing.error-feedback]
enabled = false
""" + "".join(
    f"""
# {reason}
[[operations]]
include-operation-id = "{operation}"
checks.positive_data_acceptance.expected-statuses = {json.dumps([*ACCEPTED, "400"])}
"""
    for operation, reason in SCHEMA_LESS_400.items()
)

CALLERS = {
    "customer": lambda ids: [f"Authorization: Token {ids['token']}"],
    "channel": lambda ids: [
        f"Authorization: Api-Key {ids['channel_key']}",
        f"X-Customer-Id: {ids['customer_id']}",
    ],
    "anonymous": lambda ids: [],
}

SEED_EXTRA = """
from rest_framework.authtoken.models import Token
from core.money import Money
from customers.models import Customer
from oms.management.commands.seed_demo import demo_api_key
from oms.models import StockItem
from wallet.models import TransactionKind
from wallet.services import wallet_credit
import json
alice = Customer.objects.get(user__username="alice@example.com")
for currency in ("EUR", "USD", "JPY", "KWD"):
    wallet_credit(customer_id=alice.pk, amount=Money.parse("1000000", currency),
                  kind=TransactionKind.TOP_UP, idempotency_key="fuzz-" + currency, note="fuzz")
StockItem.objects.update(on_hand=1_000_000)
print(json.dumps({"token": Token.objects.get(user=alice.user).key, "customer_id": alice.pk,
                  "channel_key": demo_api_key("web")}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_database(url: str) -> str:
    """``url`` with its database name suffixed ``_fuzz``, dropped and created anew."""
    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/") + "_fuzz"
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return urlunsplit(parts._replace(path=f"/{name}"))


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def orders_placed(har: Path) -> int:
    entries = json.loads(har.read_text())["log"]["entries"]
    return sum(
        1
        for e in entries
        if e["request"]["method"] == "POST"
        and urlsplit(e["request"]["url"]).path == "/api/v1/orders"
        and e["response"]["status"] == 201
    )


def main() -> int:
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("fuzz_api: set DATABASE_URL to a PostgreSQL server", file=sys.stderr)
        return 2
    # The server's request log (every 4xx) goes here; its errors are shown at the end.
    with tempfile.TemporaryFile("w+") as server_log:
        return run(server_log)


def run(server_log) -> int:
    sandbox_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database(os.environ["DATABASE_URL"]),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PAYMENT_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "LOG_LEVEL": "ERROR",
    }

    def manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True, **kwargs)

    manage("migrate", "--noinput", "-v", "0")
    manage("createcachetable")  # the login throttle's cache, as `make run` makes it
    manage("seed_demo", stdout=subprocess.DEVNULL)
    seeded = manage("shell", "-c", SEED_EXTRA, capture_output=True, text=True).stdout
    ids = json.loads(seeded.strip().splitlines()[-1])

    servers = [
        subprocess.Popen(
            [PY, "manage.py", "run_payment_sandbox", "--port", str(sandbox_port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True,
        ),
        subprocess.Popen(
            [PY, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{web_port}",
             "--workers", "2", "--timeout", "60", "--log-level", "warning"],
            cwd=ROOT, env=env, stderr=server_log, start_new_session=True,
        ),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{web_port}"
    failed, placed = [], 0
    try:
        wait_for(f"http://127.0.0.1:{sandbox_port}/card/v1/health")
        wait_for(f"{base}/healthz")
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp, "schemathesis.toml")
            config.write_text(CONFIG)
            for caller, headers in CALLERS.items():
                har = Path(tmp, f"{caller}.har")
                budget = max(10, SECONDS // len(CALLERS))
                command = [ST, "--config-file", str(config), "run", f"{base}/api/schema/",
                           "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
                           "--max-time", str(budget), "--workers", "1", "--seed", SEED,
                           "--report", "har", "--report-har-path", str(har),
                           "--request-timeout", "20", "--warnings", "off"]  # fmt: skip
                for header in headers(ids):
                    command += ["-H", header]
                print(f"\n=== schemathesis as {caller} ({budget} s) ===", flush=True)
                if subprocess.run(command, cwd=tmp).returncode != 0:
                    failed.append(caller)
                if har.exists():
                    placed += orders_placed(har)
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
    server_log.seek(0)
    errors = [line for line in server_log if "Internal Server Error" in line or "Traceback" in line]
    if errors:
        print("fuzz_api: the server logged errors:\n" + "".join(errors[:20]), file=sys.stderr)
    print(f"\nfuzz_api: {placed} orders placed (201 on POST /api/v1/orders)")
    if failed:
        print(f"fuzz_api: checks failed as {', '.join(failed)}", file=sys.stderr)
    if placed == 0:
        print("fuzz_api: no order was placed", file=sys.stderr)
    return 1 if failed or placed == 0 or errors else 0


if __name__ == "__main__":
    sys.exit(main())
