"""`make run`: migrate, load demo data, then run web, Celery worker and Celery Beat together.

Ctrl-C stops all three. With DATABASE_URL / CELERY_BROKER_URL unset it runs on SQLite and
kombu's filesystem broker under var/; set them to use PostgreSQL and Redis/RabbitMQ.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")
SANDBOX_PORT = os.environ.get("SANDBOX_PORT", "8100")


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    var = Path(os.environ.get("OMS_VAR_DIR", ROOT / "var"))
    for folder in (var, *(var / "broker" / name for name in ("queue", "processed", "control"))):
        folder.mkdir(parents=True, exist_ok=True)
    manage("migrate", "--noinput", "-v", "0")
    manage("createcachetable")  # the shared cache's table when CACHE_URL is unset
    os.environ.setdefault("PAYMENT_SANDBOX_URL", f"http://127.0.0.1:{SANDBOX_PORT}")
    manage("seed_demo")
    manage("setup_periodic_tasks")

    base = f"http://{HOST}:{PORT}"
    commands = {
        "web": [PY, "manage.py", "runserver", f"{HOST}:{PORT}", "--noreload"],
        "worker": [
            PY,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--pool",
            "prefork",
        ],
        "beat": [
            PY,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(var / "celerybeat-schedule"),
        ],
        "sandbox": [PY, "manage.py", "run_payment_sandbox", "--port", SANDBOX_PORT],
    }
    processes = {
        name: subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
        for name, cmd in commands.items()
    }
    print(
        f"""
  OMS + BNPL is starting ({"PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"}).

  Storefront API docs  {base}/api/docs/
  OpenAPI schema       {base}/api/schema/
  Admin back-office    {base}/admin/        admin / admin      (finance staff: finance / finance)
  Health               {base}/healthz   {base}/readyz
  Payment sandbox      http://127.0.0.1:{SANDBOX_PORT}/card/v1/health

  My Wallet            {base}/wallet/
  Demo customers       alice@example.com / alice-demo-pass  (KYC approved, 500.00 EUR, BNPL pilot)
                       bob@example.com   / bob-demo-pass    (KYC pending,   40.00 EUR)
  Channel API key      web: ch_demoweb_demo-key-web   (send with X-Customer-Id)

  Ctrl-C stops the web server, the worker and beat.
""",
        flush=True,
    )

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, proc in processes.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; stopping the rest.", flush=True)
                exit_code = proc.returncode or 1
                stopping = True
                break
        time.sleep(0.5)

    for proc in processes.values():
        if proc.poll() is None:
            proc.terminate()  # the main process; Celery then shuts its pool down warmly
    deadline = time.monotonic() + 15
    for proc in processes.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print("Stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
