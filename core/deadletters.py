"""Tasks that fail for good land in the dead-letter list, to be looked at and replayed.

Celery's ``task_failure`` fires once a task has failed and will not be retried again
(a task that retries raises ``Retry``, which is not a failure). The row is written in
its own transaction; replaying sends the same task with the same arguments (every task
here is idempotent).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from celery.signals import task_failure
from django.db import transaction

from core import clock
from core.models import DeadLetter

log = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


@task_failure.connect
def _store_dead_letter(
    sender=None, task_id=None, exception=None, args=None, kwargs=None, einfo=None, **_: Any
) -> None:
    try:
        with transaction.atomic():
            DeadLetter.objects.create(
                task_name=getattr(sender, "name", str(sender)),
                task_id=task_id or "",
                args=_json_safe(list(args or [])),
                kwargs=_json_safe(dict(kwargs or {})),
                exception=f"{type(exception).__name__}: {exception}"[:5000],
                traceback=str(einfo or "")[:20000],
                failed_at=clock.now(),
            )
    except Exception:  # the dead-letter list must never hide the original failure
        log.exception("could not store the dead letter of task %s", task_id)


def dead_letter_replay(*, dead_letter_id: int) -> str:
    """Send the task again with its arguments; returns the new task id."""
    with transaction.atomic():
        letter = DeadLetter.objects.select_for_update(no_key=True).get(pk=dead_letter_id)
        result = current_app.send_task(letter.task_name, args=letter.args, kwargs=letter.kwargs)
        letter.replayed_at = clock.now()
        letter.replay_task_id = result.id
        letter.save(update_fields=["replayed_at", "replay_task_id"])
    return result.id
