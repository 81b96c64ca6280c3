"""Production settings (DJANGO_DEBUG=0): refuse the development defaults, pass check --deploy."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SECURE_")) and key != "PYTEST_CURRENT_TEST"
    }
    environment.update(DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "shop.example.com,api.example.com",
    "PAYMENTS_ENCRYPTION_KEY": Fernet.generate_key().decode(),
}


def test_check_deploy_reports_no_issue_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("missing", "value", "named"),
    [
        ("DJANGO_SECRET_KEY", None, "DJANGO_SECRET_KEY"),
        (
            "DJANGO_SECRET_KEY",
            "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production",
            "DJANGO_SECRET_KEY",
        ),
        ("DJANGO_SECRET_KEY", "changeme", "DJANGO_SECRET_KEY"),
        ("DJANGO_SECRET_KEY", "ab" * 30, "DJANGO_SECRET_KEY"),  # long, but 2 characters
        ("DJANGO_ALLOWED_HOSTS", None, "DJANGO_ALLOWED_HOSTS"),
        ("DJANGO_ALLOWED_HOSTS", "*", "DJANGO_ALLOWED_HOSTS"),
    ],
)
def test_production_refuses_to_start_on_development_defaults(missing, value, named):
    env = dict(PRODUCTION)
    if value is None:
        del env[missing]
    else:
        env[missing] = value
    result = manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


def test_check_deploy_warns_of_a_proxy_whose_client_addresses_are_not_read():
    behind_a_proxy = {**PRODUCTION, "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}

    result = manage("check", "--deploy", **behind_a_proxy)
    assert "customers.W001" in result.stdout + result.stderr

    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", **behind_a_proxy, DJANGO_NUM_PROXIES="1"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_development_still_starts_on_its_defaults():
    result = manage("check")
    assert result.returncode == 0, result.stdout + result.stderr
