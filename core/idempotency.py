"""Idempotency keys for POSTs that move money.

The protocol follows the IETF ``Idempotency-Key`` header draft:

1. ``idempotency_begin`` claims ``(scope, key)`` in a short transaction of its own. A repeat
   of a finished request gets its stored response back; the same key with a different
   body is 409 ``idempotency.key_reused``; a repeat while the first is still running is 409
   ``idempotency.in_progress`` (the client retries and then gets the replay).
2. The money-moving service calls ``claim.complete(result)`` as its last step, inside its
   own transaction: the stored response commits together with the writes it describes, so
   a crash can never leave a paid order without its replay, or a replay without its order.
3. If the request fails, ``idempotency_release`` drops the claim, so the same key may be
   retried (say, after a top-up).

A claim left behind by a process that died mid-request is taken over once it is older than
``settings.IDEMPOTENCY_LOCK_SECONDS``: its transaction never committed, so nothing happened.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from core import clock
from core.errors import Conflict
from core.models import IdempotencyRecord


class IdempotencyKeyReused(Conflict):
    code = "idempotency.key_reused"
    default_message = "This Idempotency-Key was already used with a different request."


class IdempotencyInProgress(Conflict):
    code = "idempotency.in_progress"
    default_message = "A request with this Idempotency-Key is still being processed; retry."


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


@dataclass
class IdempotencyClaim:
    record_id: int
    token: uuid.UUID
    # Turns the service's result into (status, body); set by the API view.
    render: Callable[[Any], tuple[int, Any]]
    response: StoredResponse | None = field(default=None)

    def complete(self, result: Any) -> StoredResponse:
        """Store the response for ``result``; call inside the service's transaction."""
        if not transaction.get_connection().in_atomic_block:
            raise RuntimeError("complete() must run inside the service's transaction")
        status, body = self.render(result)
        updated = IdempotencyRecord.objects.filter(
            pk=self.record_id, claim_token=self.token, state=IdempotencyRecord.State.IN_PROGRESS
        ).update(
            state=IdempotencyRecord.State.COMPLETED,
            response_status=status,
            response_body=body,
            completed_at=clock.now(),
        )
        if updated != 1:
            # Another request took the claim over; roll this one back.
            raise IdempotencyInProgress()
        self.response = StoredResponse(status, body)
        return self.response


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def idempotency_begin(
    *,
    scope: str,
    key: str,
    method: str,
    path: str,
    body: Any,
    render: Callable[[Any], tuple[int, Any]],
) -> IdempotencyClaim | StoredResponse:
    """Claim ``key`` for this request, or return the response of the request that used it."""
    digest = fingerprint(method, path, body)
    now = clock.now()
    with transaction.atomic(durable=True):
        record, created = IdempotencyRecord.objects.get_or_create(
            scope=scope,
            key=key,
            defaults={
                "method": method,
                "path": path,
                "fingerprint": digest,
                "claim_token": uuid.uuid4(),
                "locked_at": now,
                "created_at": now,
            },
        )
        if created:
            return IdempotencyClaim(record.pk, record.claim_token, render)
        record = IdempotencyRecord.objects.select_for_update(no_key=True).get(pk=record.pk)
        if record.fingerprint != digest:
            raise IdempotencyKeyReused(
                fields={"Idempotency-Key": [IdempotencyKeyReused.default_message]}
            )
        if record.state == IdempotencyRecord.State.COMPLETED:
            return StoredResponse(record.response_status, record.response_body)
        if record.locked_at > now - timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS):
            raise IdempotencyInProgress()
        record.claim_token = uuid.uuid4()
        record.locked_at = now
        record.save(update_fields=["claim_token", "locked_at"])
        return IdempotencyClaim(record.pk, record.claim_token, render)


def idempotency_release(claim: IdempotencyClaim) -> None:
    """Drop an unfinished claim after its request failed, so the key can be retried."""
    IdempotencyRecord.objects.filter(
        pk=claim.record_id, claim_token=claim.token, state=IdempotencyRecord.State.IN_PROGRESS
    ).delete()
