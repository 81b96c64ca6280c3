"""Off-session card charges through the real adapter against the payment sandbox.

What it measures
    Charges per second for ``--charges`` off-session charges (default 2,000) at
    ``--concurrency`` (default 32) against the payment sandbox set to ``--latency-ms``
    (default 50 ms) of latency per answer, and the ratio to the latency limit: with 32
    calls in flight that each take at least 50 ms, no client can do better than
    32 ÷ 0.05 s = 640 charges/s. Target ratio ≥ 0.7.

    Each charge is ``CardGateway.charge_off_session(amount=10.00 EUR, payment_method=
    "pm_card", idempotency_key=<unique>)`` wrapped exactly as ``payments.processing`` wraps
    every provider call: ``breaker_for("card").call(lambda: with_retries(fn))``. One thread
    per concurrent caller, each with its own ``CardGateway`` (so its own ``requests``
    session and HTTP keep-alive connection), made when the round starts. Every result must
    be ``Decision.APPROVED``; anything else (a decline, an unknown outcome, an exception)
    aborts the run with the errors.

    Interleaved with each round, for context: a short serial round (``--serial-charges``,
    concurrency 1), whose limit is 1 ÷ 0.05 s = 20 charges/s. Each round also prints the
    per-charge latency (p50, p99) and the CPU time per charge of this process and of the
    sandbox process, to tell waiting from CPU when the ratio falls short. The medians of
    ``--rounds`` rounds are quoted.

How
    The sandbox runs as a separate process (``manage.py run_payment_sandbox`` on a free
    local port, its own process group, stopped at the end even on error; Django settings
    load with ``OMS_VAR_DIR`` in a temporary directory, and nothing touches a database).
    This process sets Django up to import the adapter and the reliability wrappers; no
    database is touched here either. After the rounds, ``GET /sandbox/charges`` must list
    exactly the charges made (warm-up included), each idempotency key once, each captured
    off-session for the amount sent: no double charge.

Run from the repository root::

    .venv/bin/python bench/gateway.py            # 2000 charges × 3 rounds, 32 threads, 50 ms
    .venv/bin/python bench/gateway.py --quick    # smoke run: 300 charges, 1 round
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from benchdb import stop_process_group, tail

# One production-style secret for every child process of a bench run.
BENCH_SECRET_KEY = secrets.token_urlsafe(50)

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.7
AMOUNT_MINOR = 1000  # 10.00 EUR
CURRENCY = "EUR"
PAYMENT_METHOD = "pm_card"
SECRET = "sk_bench"
WARMUP_PER_THREAD = 2  # charges per thread before round 1, not timed
MAX_ERRORS_SHOWN = 10


# --- the sandbox process ---------------------------------------------------------------


def sandbox_env(var_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or BENCH_SECRET_KEY,
        DJANGO_SECURE_SSL_REDIRECT="0",  # the bench speaks plain HTTP to 127.0.0.1
        LOG_LEVEL="WARNING",
        OMS_VAR_DIR=var_dir,  # keep the filesystem broker and SQLite defaults out of var/
        PYTHONUNBUFFERED="1",
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox_call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    """One request to the sandbox's own endpoints (config, witness), outside the adapter."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise SystemExit(f"sandbox {method} {path} answered {response.status}: {payload!r}")
        return json.loads(payload)
    finally:
        conn.close()


def start_sandbox(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_payment_sandbox", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped as one
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the sandbox exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            if sandbox_call(port, "GET", "/card/v1/health").get("status") == "ok":
                return proc
        except (OSError, http.client.HTTPException, SystemExit, ValueError):
            pass
        time.sleep(0.2)
    stop_sandbox(proc)
    raise SystemExit(f"the sandbox did not answer /card/v1/health in 60 s:\n{tail(log_path)}")


def stop_sandbox(proc) -> None:
    stop_process_group(proc, grace=10)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of another process (Linux ``/proc``); None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# --- the load --------------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_round(base_url: str, label: str, charges: int, concurrency: int, sandbox_pid: int):
    """``charges`` charges from ``concurrency`` threads; returns (stats, keys sent)."""
    from core.money import Money
    from payments.adapters.card import CardGateway
    from payments.gateway import Decision
    from payments.reliability import breaker_for, with_retries

    amount = Money(AMOUNT_MINOR, CURRENCY)
    counts = split(charges, concurrency)
    prefix = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    keys: list[list[str]] = [[] for _ in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)

    def caller(index: int) -> None:
        gateway = CardGateway(base_url=base_url, secret=SECRET)  # its own requests.Session
        try:
            # Open the keep-alive connection before the clock starts: 32 connects at once
            # overflow the sandbox's listen backlog (5) and some wait for a SYN retry (1 s).
            if not gateway.health():
                with lock:
                    errors.append("health check failed before the round")
            ready.wait()
            for n in range(counts[index]):
                key = f"{prefix}-{index}-{n}"
                keys[index].append(key)
                charge = functools.partial(
                    gateway.charge_off_session,
                    amount=amount,
                    reference=f"order-{key}",
                    payment_method=PAYMENT_METHOD,
                    idempotency_key=key,
                )
                started = time.perf_counter()
                try:
                    result = breaker_for("card").call(lambda charge=charge: with_retries(charge))
                except Exception as exc:  # every failure is reported, then the run aborts
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies[index].append(time.perf_counter() - started)
                if result.decision != Decision.APPROVED:
                    with lock:
                        errors.append(
                            f"decision {result.decision} status {result.status!r} "
                            f"decline {result.decline_code!r}"
                        )
        finally:
            gateway.http.close()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    cpu_self, cpu_sandbox = own_cpu_seconds(), process_cpu_seconds(sandbox_pid)
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    cpu_self = own_cpu_seconds() - cpu_self
    sandbox_after = process_cpu_seconds(sandbox_pid)
    cpu_sandbox = (
        None if cpu_sandbox is None or sandbox_after is None else sandbox_after - cpu_sandbox
    )

    sent = [key for per_thread in keys for key in per_thread]
    if errors:
        print(f"\n!! {label}: {len(errors)} of {charges} charges not approved", flush=True)
        for error, count in Counter(errors).most_common(MAX_ERRORS_SHOWN):
            print(f"  {count}× {error}")
        raise SystemExit(f"{label}: not every charge was approved")
    all_latencies = sorted(x for per_thread in latencies for x in per_thread)
    stats = {
        "charges": charges,
        "elapsed": elapsed,
        "rate": charges / elapsed,
        "p50_ms": 1000 * all_latencies[len(all_latencies) // 2],
        "p99_ms": 1000 * all_latencies[min(len(all_latencies) - 1, int(len(all_latencies) * 0.99))],
        "cpu_self_ms": 1000 * cpu_self / charges,
        "cpu_sandbox_ms": None if cpu_sandbox is None else 1000 * cpu_sandbox / charges,
    }
    return stats, sent


def describe(stats: dict, limit: float) -> str:
    sandbox = stats["cpu_sandbox_ms"]
    return (
        f"{stats['rate']:.1f} charges/s (ratio {stats['rate'] / limit:.3f}; "
        f"{stats['charges']} in {stats['elapsed']:.2f} s; latency p50 {stats['p50_ms']:.1f} ms, "
        f"p99 {stats['p99_ms']:.1f} ms; CPU/charge bench {stats['cpu_self_ms']:.2f} ms, "
        f"sandbox {'n/a' if sandbox is None else f'{sandbox:.2f}'} ms)"
    )


def verify(port: int, sent: list[str]) -> None:
    """The sandbox holds exactly the charges sent, each key once, each as asked."""
    charges = sandbox_call(port, "GET", "/sandbox/charges")["data"]
    per_key = Counter(c["idempotency_key"] for c in charges)
    doubled = {key: n for key, n in per_key.items() if n > 1}
    missing = set(sent) - set(per_key)
    extra = set(per_key) - set(sent)
    wrong = [
        c
        for c in charges
        if c["status"] != "captured"
        or not c["off_session"]
        or c["amount"] != AMOUNT_MINOR
        or c["currency"] != CURRENCY
    ]
    bad = []
    if len(charges) != len(sent):
        bad.append(f"{len(charges)} charges in the sandbox, {len(sent)} sent")
    if len(set(sent)) != len(sent):
        bad.append("the bench sent a key twice")
    if doubled:
        bad.append(f"{len(doubled)} keys charged more than once, e.g. {next(iter(doubled))}")
    if missing:
        bad.append(f"{len(missing)} keys sent but not charged")
    if extra:
        bad.append(f"{len(extra)} charges nobody sent")
    if wrong:
        bad.append(f"{len(wrong)} charges not captured off-session for the amount, e.g. {wrong[0]}")
    print(
        f"sandbox witness: {len(charges)} charges, {len(per_key)} idempotency keys: "
        + ("OK (each key charged once)" if not bad else "MISMATCH: " + "; ".join(bad)),
        flush=True,
    )
    if bad:
        raise SystemExit("verification failed")


# --- orchestration ---------------------------------------------------------------------


def use_local_memory_cache() -> None:
    """The breaker's shared cache for this one process: its threads share local memory
    (the settings' default, a database table, does not exist in the bench)."""
    from django.conf import settings
    from django.test.signals import clear_cache_handlers

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "bench-gateway",
            "KEY_PREFIX": "oms",
        }
    }
    clear_cache_handlers(setting="CACHES")


def main(args: argparse.Namespace) -> None:
    if args.quick:
        args.charges, args.rounds = 300, 1
    latency = args.latency_ms / 1000
    limit = args.concurrency / latency
    serial_limit = 1 / latency
    print(
        f"gateway bench: {args.charges} off-session charges × {args.rounds} rounds, "
        f"{args.concurrency} threads (one CardGateway each, keep-alive), sandbox latency "
        f"{args.latency_ms:g} ms; latency limit {args.concurrency} ÷ {latency:g} s = "
        f"{limit:.0f} charges/s",
        flush=True,
    )
    print(f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="oms-bench-gateway-"))
    env = sandbox_env(str(workdir / "var"))
    log_path = workdir / "sandbox.log"
    sandbox = None
    try:
        port = free_port()
        sandbox = start_sandbox(port, env, log_path)
        sandbox_call(port, "POST", "/sandbox/config", {"latency_ms": args.latency_ms})

        os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "OMS_VAR_DIR")})
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        sys.path.insert(0, str(REPO))
        import django

        django.setup()
        use_local_memory_cache()

        base_url = f"http://127.0.0.1:{port}/card"
        sent: list[str] = []
        warm = args.concurrency * WARMUP_PER_THREAD
        _, keys = run_round(base_url, "warmup", warm, args.concurrency, sandbox.pid)
        sent += keys

        rates: list[float] = []
        serial_rates: list[float] = []
        for round_no in range(1, args.rounds + 1):
            stats, keys = run_round(
                base_url, f"r{round_no}", args.charges, args.concurrency, sandbox.pid
            )
            sent += keys
            rates.append(stats["rate"])
            print(f"round {round_no}: {args.concurrency} threads {describe(stats, limit)}")
            if args.serial_charges:
                stats, keys = run_round(
                    base_url, f"s{round_no}", args.serial_charges, 1, sandbox.pid
                )
                sent += keys
                serial_rates.append(stats["rate"])
                print(f"round {round_no}: 1 thread    {describe(stats, serial_limit)}", flush=True)

        median = statistics.median(rates)
        ratio = median / limit
        print(
            f"median: {median:.1f} charges/s at {args.concurrency} threads, latency limit "
            f"{limit:.0f} charges/s, ratio {ratio:.3f} "
            f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})",
            flush=True,
        )
        if serial_rates:
            serial = statistics.median(serial_rates)
            print(
                f"median (context): {serial:.1f} charges/s at 1 thread, limit "
                f"{serial_limit:.0f} charges/s, ratio {serial / serial_limit:.3f}",
                flush=True,
            )
        verify(port, sent)
    finally:
        stop_sandbox(sandbox)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--charges", type=int, default=2000, help="charges per round")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers")
    parser.add_argument(
        "--latency-ms", type=float, default=50, help="sandbox latency per answer (ms)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds")
    parser.add_argument(
        "--serial-charges",
        type=int,
        default=40,
        help="charges of the 1-thread context round after each round (0: none)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 charges, 1 round")
    args = parser.parse_args(argv)
    if args.charges < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--charges, --concurrency and --rounds must be positive")
    if args.latency_ms <= 0 or args.serial_charges < 0:
        parser.error("--latency-ms must be positive and --serial-charges not negative")
    return args


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
