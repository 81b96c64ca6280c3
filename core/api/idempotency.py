"""The API side of ``core.idempotency``: read the header, claim, replay, release."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import InvalidInput
from core.idempotency import (
    IdempotencyClaim,
    StoredResponse,
    idempotency_begin,
    idempotency_release,
)

HEADER = "Idempotency-Key"
# Visible ASCII, 1 to 255 characters: idempotency keys, provider tokens.
VISIBLE_ASCII = r"^[\x21-\x7e]{1,255}$"
_KEY_RE = re.compile(VISIBLE_ASCII)


def caller_scope(request: Request) -> str:
    """Keys are the caller's own: a customer in person, or one channel acting for them.

    Credentials that act for a customer (a channel's API key, ``request.auth``) carry their
    own ``idempotency_scope``, so two channels using the same key never share a response.
    """
    scope = f"user:{request.user.pk}"
    acting = getattr(request.auth, "idempotency_scope", None)
    return f"{scope}:{acting}" if acting else scope


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, if any; a malformed one is refused even where the
    request turns out not to need it (a preview)."""
    key = request.headers.get(HEADER)
    if key is not None and not _KEY_RE.fullmatch(key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            code="idempotency.invalid_key",
            fields={HEADER: ["1 to 255 visible ASCII characters."]},
        )
    return key


def idempotent(
    request: Request,
    *,
    render: Callable[[Any], tuple[int, Any]],
    perform: Callable[[IdempotencyClaim | None], Any],
) -> Response:
    """Run ``perform`` at most once per ``Idempotency-Key`` of this caller.

    ``perform`` calls the service, passing the claim on; the service completes it in its
    transaction. Without the header, ``perform(None)`` runs and its result is rendered.
    """
    key = idempotency_key(request)
    if key is None:
        status, body = render(perform(None))
        return Response(body, status=status)
    outcome = idempotency_begin(
        scope=caller_scope(request),
        key=key,
        method=request.method,
        path=request.path,
        body=request.data,
        render=render,
    )
    if isinstance(outcome, StoredResponse):
        return Response(
            outcome.body, status=outcome.status, headers={"Idempotent-Replayed": "true"}
        )
    claim = outcome
    try:
        perform(claim)
    except BaseException:
        idempotency_release(claim)
        raise
    if claim.response is None:
        raise RuntimeError("the service did not complete its idempotency claim")
    return Response(claim.response.body, status=claim.response.status)
