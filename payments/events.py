"""Handing payment outcomes up to the apps that own what was paid for.

A higher app (oms) registers a handler for its reference type at start-up
(``register("oms.order", handler)``), so this layer never imports it. When the outcome of
an authorization is recorded, whatever the route (the call's answer, a webhook, the
reconciler), the handler is called after the recording transaction commits with
``(reference_id, approved)``. Handlers must be idempotent: the same outcome may arrive
more than once.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

Handler = Callable[[str, bool], None]
_handlers: dict[str, Handler] = {}


def register(reference_type: str, handler: Handler) -> None:
    _handlers[reference_type] = handler


def authorization_settled(*, reference_type: str, reference_id: str, approved: bool) -> None:
    """Call the owner's handler once the current transaction commits."""
    handler = _handlers.get(reference_type)
    if handler is not None:
        transaction.on_commit(lambda: handler(reference_id, approved))
