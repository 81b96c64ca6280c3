"""Secrets at rest: provider credentials and webhook secrets are Fernet-encrypted.

The key comes from ``PAYMENTS_ENCRYPTION_KEY`` (a urlsafe-base64 32-byte Fernet key:
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``).
In development, without it, a key is derived from ``SECRET_KEY``; in production
(``DEBUG`` off) the variable is required.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet() -> Fernet:
    key = getattr(settings, "PAYMENTS_ENCRYPTION_KEY", "")
    if not key:
        if not settings.DEBUG:
            raise ImproperlyConfigured("Set PAYMENTS_ENCRYPTION_KEY to encrypt payment secrets.")
        digest = hashlib.sha256(f"payments:{settings.SECRET_KEY}".encode()).digest()
        key = base64.urlsafe_b64encode(digest).decode()
    return Fernet(key)


def encrypt(value: Any) -> str:
    """Encrypt any JSON value; an empty value stays empty."""
    if value in (None, "", {}):
        return ""
    return _fernet().encrypt(json.dumps(value).encode()).decode()


def decrypt(token: str) -> Any:
    if not token:
        return None
    return json.loads(_fernet().decrypt(token.encode()))


def mask(secret: str | None) -> str:
    """What the admin shows of a secret: its last four characters."""
    if not secret:
        return "—"
    return f"••••{secret[-4:]}" if len(secret) > 8 else "••••"
