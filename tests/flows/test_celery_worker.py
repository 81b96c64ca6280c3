"""The daily debt job through a real Celery worker and broker, and its beat schedule."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from core import clock
from tests.env import database_url
from tests.factories import ChannelFactory, approve_kyc, borrow, enable_wallet_bnpl, make_customer
from wallet.models import DebtStatus, WalletDebt


@pytest.fixture
def worker():
    """A Celery worker process on the test database and the suite's broker."""
    broker = settings.CELERY_BROKER_URL
    if broker.startswith("filesystem://"):
        pytest.skip("needs a real broker: set CELERY_BROKER_URL (make test does)")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker,
    }
    queue = f"test-{os.getpid()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--queues",
            queue,
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        cwd=settings.BASE_DIR,
        start_new_session=True,
    )
    try:
        yield queue
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.django_db(transaction=True)
def test_daily_debt_run_marks_overdue_through_a_real_worker(worker):
    from wallet.tasks import daily_debt_run

    ChannelFactory(code="web")
    enable_wallet_bnpl()
    debt_id = borrow(approve_kyc(make_customer()), "10.00")
    day = (clock.business_date() + timedelta(days=31)).isoformat()
    daily_debt_run.apply_async(kwargs={"business_date": day}, queue=worker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if WalletDebt.objects.get(pk=debt_id).status == DebtStatus.OVERDUE:
            break
        time.sleep(0.5)
    assert WalletDebt.objects.get(pk=debt_id).status == DebtStatus.OVERDUE


@pytest.mark.django_db
def test_setup_periodic_tasks_creates_every_schedule_once_and_keeps_pauses():
    call_command("setup_periodic_tasks")
    tasks = dict(PeriodicTask.objects.values_list("task", "enabled"))
    assert {"wallet.daily_debt_run", "core.deliver_emails"} <= set(tasks)
    PeriodicTask.objects.filter(task="wallet.daily_debt_run").update(enabled=False)
    call_command("setup_periodic_tasks")
    assert PeriodicTask.objects.filter(task="wallet.daily_debt_run").count() == 1
    assert PeriodicTask.objects.get(task="wallet.daily_debt_run").enabled is False
