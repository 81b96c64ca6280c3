"""Fail fast, with a fix, when the test suite's PostgreSQL is not reachable."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

url = urlparse(os.environ["DATABASE_URL"])
host, port = url.hostname or "127.0.0.1", url.port or 5432
try:
    socket.create_connection((host, port), timeout=3).close()
except OSError as exc:
    sys.exit(
        f"PostgreSQL is not reachable at {host}:{port} ({exc}).\n"
        "The tests run against a real PostgreSQL. Start one, e.g.:\n"
        "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
        "or  docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15\n"
        "or point DATABASE_URL at one: DATABASE_URL=postgres://user@host:5432/oms make test"
    )
