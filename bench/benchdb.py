"""Shared pieces of the benchmarks: the throwaway PostgreSQL database, child processes."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# One production-style secret for every child process of a bench run.
BENCH_SECRET_KEY = secrets.token_urlsafe(50)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/oms"


def bench_urls(database_url: str, suffix: str) -> tuple[str, str, str]:
    """(bench database URL, maintenance database URL, bench database name)."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"DATABASE_URL must be PostgreSQL, not {parts.scheme!r}")
    name = parts.path.lstrip("/") or "oms"
    bench_name = f"{name}_{suffix}"
    bench = urlunsplit(parts._replace(path=f"/{bench_name}"))
    admin = urlunsplit(parts._replace(path="/postgres"))
    return bench, admin, bench_name


def _admin(admin_url: str, *statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def recreate_database(admin_url: str, name: str) -> None:
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, name: str) -> None:
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stop_process_group(proc: subprocess.Popen | None, *, grace: float = 20) -> None:
    """SIGTERM a child started in its own session, SIGKILL it after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 60) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def child_env(database_url: str, var_dir: str) -> dict[str, str]:
    """The environment of a Django child process: the bench database, production-like
    settings, and its own var/ so the SQLite and filesystem-broker defaults stay out."""
    env = dict(os.environ)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or BENCH_SECRET_KEY,
        DJANGO_SECURE_SSL_REDIRECT="0",  # the bench speaks plain HTTP to 127.0.0.1
        LOG_LEVEL="WARNING",
        OMS_VAR_DIR=var_dir,
        PYTHONUNBUFFERED="1",
    )
    return env
