import pytest
from celery import current_app
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from core.schedules import registered

pytestmark = pytest.mark.django_db

# Every periodic job issue 6 asks for, by its Celery task name.
REQUIRED = {
    "collections.debit_run",  # the daily debit run
    "collections.retry_due",  # technical retries
    "collections.delinquency_run",  # overdue marking of installments, buckets and actions
    "wallet.daily_debt_run",  # overdue marking of wallet debts (wallet's own job)
    "collections.reminders_run",  # reminders
    "payments.check_provider_health",  # provider health checks
    "payments.reconcile_unknown",  # the reconciler
}


def test_every_periodic_job_is_scheduled_once_and_names_a_real_task():
    call_command("setup_periodic_tasks")
    call_command("setup_periodic_tasks")

    schedules = registered()
    current_app.loader.import_default_modules()
    missing = [s.task for s in schedules if s.task not in current_app.tasks]
    assert missing == []
    assert {s.task for s in schedules} >= REQUIRED

    rows = PeriodicTask.objects.filter(crontab__isnull=False)
    assert sorted(rows.values_list("name", flat=True)) == sorted(s.name for s in schedules)
    assert {(r.name, r.task) for r in rows} == {(s.name, s.task) for s in schedules}
    crontabs = CrontabSchedule.objects.all()
    assert crontabs.count() == len({s.crontab for s in schedules})
    for schedule in schedules:
        row = rows.get(name=schedule.name)
        c = row.crontab
        assert f"{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week}" == (
            schedule.crontab
        )
        assert row.enabled


def test_a_job_paused_in_the_admin_stays_paused_on_the_next_deploy():
    call_command("setup_periodic_tasks")
    PeriodicTask.objects.filter(task="collections.reminders_run").update(enabled=False)
    call_command("setup_periodic_tasks")
    assert not PeriodicTask.objects.get(task="collections.reminders_run").enabled
