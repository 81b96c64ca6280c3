"""The audit trail: one row per money movement and admin action, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from core import clock
from core.models import AuditEntry


def audit_record(
    *,
    action: str,
    target: models.Model,
    actor: Any = None,
    actor_label: str = "",
    changes: dict[str, Any] | None = None,
    note: str = "",
) -> AuditEntry:
    """Write an audit row. Must run inside the transaction of the change it describes."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change")
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEntry.objects.create(
        created_at=clock.now(),
        actor=user,
        actor_label=actor_label,
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        changes=changes or {},
        note=note,
    )
