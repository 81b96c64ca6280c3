import pytest
from celery import shared_task
from django.urls import reverse

from core.models import DeadLetter


@shared_task(name="tests.always_fails")
def always_fails(order_id: int, *, reason: str) -> None:
    raise ValueError(f"cannot process order {order_id}: {reason}")


@pytest.mark.django_db
def test_a_task_that_fails_for_good_is_kept_and_can_be_replayed(admin_client):
    result = always_fails.apply(args=[42], kwargs={"reason": "provider down"})
    assert result.failed()
    letter = DeadLetter.objects.get()
    assert (letter.task_name, letter.args, letter.kwargs) == (
        "tests.always_fails",
        [42],
        {"reason": "provider down"},
    )
    assert letter.exception == "ValueError: cannot process order 42: provider down"
    assert "Traceback" in letter.traceback

    admin_client.post(
        reverse("admin:core_deadletter_changelist"),
        {"action": "replay", "_selected_action": [letter.pk]},
    )
    letter.refresh_from_db()
    assert letter.replayed_at is not None
    assert letter.replay_task_id
    page = admin_client.get(reverse("admin:core_deadletter_change", args=[letter.pk]))
    assert b'name="_save"' not in page.content
