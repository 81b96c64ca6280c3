"""Quote throughput: ``POST /api/v1/bnpl/quotes`` against the pure pricing function.

What it measures
    Quotes per second for a cart of 1,200.00 EUR in the ``electronics`` category and a
    12-installment declining-balance product (19.99 % APR, 1 % origination fee, 0.49 EUR
    per installment), with a reduced-APR promotion that applies and two that do not, two
    ways, in one Django process on the same database:

    * **api** — the full request through Django's test client: middleware, URL routing,
      token authentication, DRF validation, the quote selector's queries (products,
      promotions and their product links), ``price_schedule``, the APR search and the JSON
      rendering of all 12 lines. One request at a time; every answer must be 200 with the
      schedule the ceiling computes.
    * **ceiling** — ``bnpl.pricing.price_schedule`` called directly on the same (promoted)
      terms, amount and start date: the pure computation a quote cannot avoid.

    A quote is read-only CPU work, so the in-process test client is the honest and cheap
    choice: it runs everything our code does per quote and leaves out only gunicorn's HTTP
    parsing and connection set-up, which are the same for every endpoint (bench/checkout.py
    measures those). Both variants are single-threaded in the same process, so the ratio
    (api ÷ ceiling) is the share of a quote's CPU time spent pricing. Variants are
    interleaved (api, ceiling, api, ceiling, …) for ``--rounds`` rounds after a warm-up;
    medians are quoted.

How
    A dedicated database (``<name>_bench_quote`` on the server of ``DATABASE_URL``, default
    ``postgres://postgres@127.0.0.1:5432/oms``) is dropped and recreated, migrated with
    ``manage.py migrate``, filled in a child process (a customer and token through the
    services, the product and promotions), measured there, and dropped at the end unless
    ``--keep-db``.

Run from the repository root::

    .venv/bin/python bench/quote.py            # 2000 quotes × 3 rounds per variant
    .venv/bin/python bench/quote.py --quick    # smoke run: 200 quotes, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdb import DEFAULT_DATABASE_URL, bench_urls, child_env, drop_database, recreate_database

REPO = Path(__file__).resolve().parent.parent
WARMUP = 50
CART = {"amount": {"amount": "1200.00", "currency": "EUR"}, "merchant_categories": ["electronics"]}


# --- child mode: --measure (Django) ----------------------------------------------------


def measure(plan: dict) -> dict:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()

    from decimal import Decimal

    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from bnpl.models import PlanProduct, Promotion
    from bnpl.pricing import price_schedule
    from bnpl.quoting import quote_plans
    from core import clock
    from core.money import Money
    from customers.services import customer_create

    now = clock.now()
    customer = customer_create(email="quote-bench@example.com", password="bench-not-a-secret")
    token = Token.objects.create(user=customer.user)
    product = PlanProduct.objects.create(
        code="pay-in-12",
        name="Pay in 12",
        installment_count=12,
        interest_method="declining",
        apr=Decimal("19.99"),
        origination_fee_percent=Decimal(1),
        installment_fee=49,
        min_amount=5000,
        max_amount=500000,
        created_at=now,
        updated_at=now,
    )
    for code, kind, fields in (
        (
            "electronics-apr",
            "reduced_apr",
            {"apr": Decimal("9.99"), "merchant_categories": ["electronics"], "priority": 10},
        ),
        ("garden-0", "zero_interest", {"merchant_categories": ["garden"], "priority": 5}),
        ("gold-fees", "fee_waived", {"customer_tiers": ["gold"], "priority": 1}),
    ):
        promotion = Promotion.objects.create(
            code=code, name=code, kind=kind, valid_from=now, created_at=now, **fields
        )
        promotion.products.set([product])

    amount = Money.parse(CART["amount"]["amount"], CART["amount"]["currency"])
    (reference,) = quote_plans(
        customer=customer, amount=amount, merchant_categories=CART["merchant_categories"]
    )
    terms, start = reference.terms, reference.schedule.start_date
    if reference.promotion is None or reference.promotion.code != "electronics-apr":
        raise SystemExit(f"the electronics promotion should apply: {reference.promotion}")
    expected_total = Money(reference.schedule.total, "EUR").amount_str()

    client = APIClient(SERVER_NAME="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    body = json.dumps(CART)

    def api(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            response = client.generic(
                "POST", "/api/v1/bnpl/quotes", body, content_type="application/json"
            )
            if response.status_code != 200:
                raise SystemExit(f"quote answered {response.status_code}: {response.content!r}")
        elapsed = time.perf_counter() - started
        (plan_out,) = response.json()["plans"]
        if len(plan_out["schedule"]) != 12 or plan_out["totals"]["total"]["amount"] != (
            expected_total
        ):
            raise SystemExit(f"unexpected quote: {plan_out}")
        return n / elapsed

    def ceiling(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            schedule = price_schedule(terms=terms, amount=amount, start_date=start)
        elapsed = time.perf_counter() - started
        if len(schedule.lines) != 12 or schedule.total != reference.schedule.total:
            raise SystemExit("price_schedule disagrees with the quote")
        return n / elapsed

    api(WARMUP)
    ceiling(WARMUP)
    rounds = []
    for _ in range(plan["rounds"]):
        rounds.append({"api": api(plan["quotes"]), "ceiling": ceiling(plan["quotes"])})
    return {
        "rounds": rounds,
        "total": expected_total,
        "apr": str(reference.schedule.apr),
        "nominal_apr": str(terms.apr),
    }


# --- orchestration ---------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    if args.quick:
        args.quotes, args.rounds = 200, 1
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    bench_url, admin_url, bench_name = bench_urls(database_url, "bench_quote")
    workdir = Path(tempfile.mkdtemp(prefix="oms-bench-quote-"))
    env = child_env(bench_url, str(workdir / "var"))
    print(
        f"quote bench: {args.quotes} quotes × {args.rounds} rounds per variant, one process, "
        f"12 installments; database {bench_name}",
        flush=True,
    )
    recreate_database(admin_url, bench_name)
    try:
        proc = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"manage.py migrate failed against {bench_name} (see above)")
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--measure"],
            input=json.dumps({"quotes": args.quotes, "rounds": args.rounds}),
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"--measure failed (exit {proc.returncode})")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if args.keep_db:
            print(f"kept database {bench_name}")
        else:
            drop_database(admin_url, bench_name)
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"quote: 1200.00 EUR, nominal APR {result['nominal_apr']} % after the promotion, "
        f"total {result['total']} EUR, effective APR {result['apr']} %"
    )
    for number, r in enumerate(result["rounds"], start=1):
        print(
            f"round {number}: api {r['api']:.1f} quotes/s, ceiling {r['ceiling']:.1f} "
            f"price_schedule/s (ratio {r['api'] / r['ceiling']:.3f})",
            flush=True,
        )
    api_median = statistics.median(r["api"] for r in result["rounds"])
    ceiling_median = statistics.median(r["ceiling"] for r in result["rounds"])
    print(
        f"median: api {api_median:.1f} quotes/s ({1000 / api_median:.2f} ms a quote), "
        f"ceiling {ceiling_median:.1f} price_schedule/s ({1000 / ceiling_median:.2f} ms), "
        f"ratio {api_median / ceiling_median:.3f}",
        flush=True,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quotes", type=int, default=2000, help="quotes per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 quotes, 1 round")
    parser.add_argument("--keep-db", action="store_true", help="leave the bench database")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quotes < 1 or args.rounds < 1:
        parser.error("--quotes and --rounds must be positive")
    return args


if __name__ == "__main__":
    options = parse_args(sys.argv[1:])
    if options.measure:
        print(json.dumps(measure(json.loads(sys.stdin.read()))))
    else:
        main(options)
