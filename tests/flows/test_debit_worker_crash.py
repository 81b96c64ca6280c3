"""The debit run through a real Celery worker that is killed (SIGKILL) 20 times mid-run.

The worker runs on the committed test database and a real Redis broker; the payment
sandbox runs in this process, so it outlives every worker. After the kills a last worker
finishes the run, stale attempts are reconciled by key, due retries are charged, and then:
every due installment is paid, none was charged twice (the sandbox's own charge log), every
captured charge is booked once, and the ledger verifies (autouse fixture).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import requests
from celery import current_app
from django.conf import settings

from bnpl.models import InstallmentStatus
from collections_ import debits
from collections_.models import AttemptStatus, CollectionsSettings, DebitAttempt, DebitRun
from core import clock
from ledger.models import JournalEntry
from tests.bnpl.factories import make_plan
from tests.collections.debit_helpers import charges_by_key, sandbox_charges
from tests.env import database_url
from tests.factories import ChannelFactory, make_customer

pytestmark = pytest.mark.django_db(transaction=True)

PLANS = 200
KILLS = 20

# The worker: abandoned (unacknowledged) messages come back within seconds, not the
# transport's default hour, so a restarted worker picks up the chunk its predecessor held.
LAUNCHER = """
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from config.celery import app
app.conf.broker_transport_options = {
    "visibility_timeout": 3,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": 5,
}
app.conf.task_default_queue = os.environ["TEST_QUEUE"]
app.worker_main(["worker", "--pool", "solo", "--queues", os.environ["TEST_QUEUE"],
                 "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
                 "--without-mingle"])
"""


class Worker:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self.ready.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER],
            env=self.env,
            cwd=settings.BASE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._watch, args=(self.process,), daemon=True).start()

    def _watch(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            if " ready." in line:
                self.ready.set()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker_env():
    broker = settings.CELERY_BROKER_URL
    if broker.startswith("filesystem://"):
        pytest.skip("needs a real broker: set CELERY_BROKER_URL (make test does)")
    queue = f"test-debits-{os.getpid()}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker,
        "PAYMENTS_ENCRYPTION_KEY": settings.PAYMENTS_ENCRYPTION_KEY,
        "TEST_QUEUE": queue,
        "LOG_LEVEL": "WARNING",
    }
    previous = current_app.conf.task_default_queue
    current_app.conf.task_default_queue = queue  # where this process sends the chunks
    yield env
    current_app.conf.task_default_queue = previous


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def test_killing_the_worker_20_times_mid_run_charges_nobody_twice(
    card_processor, sandbox, worker_env
):
    ChannelFactory(code="web")
    CollectionsSettings.objects.update_or_create(pk=1, defaults={"chunk_size": 10})
    today = clock.business_date()
    customers = [make_customer() for _ in range(10)]
    plans = [
        make_plan(
            customer=customers[i % 10],
            amount="30.00",
            start_date=today - timedelta(days=40),  # the first installment fell due ~9 days ago
        )
        for i in range(PLANS)
    ]
    due = [p.installments.order_by("number").first() for p in plans]
    assert all(i.due_date <= today for i in due)
    # A little latency, so that kills land while charges are in flight.
    requests.post(f"{sandbox}/sandbox/config", json={"latency_ms": 15}, timeout=5)

    worker = Worker(worker_env)
    rng = random.Random(6)
    try:
        worker.start()
        assert worker.ready.wait(60), "the worker did not start"
        run = debits.debit_run_start(business_date=today)
        assert run.due_count == PLANS
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            worker.kill()
            worker.start()
            assert worker.ready.wait(60), "the worker did not restart"
        finished = wait_for(
            lambda: DebitRun.objects.get(pk=run.pk).status == "finished", timeout=60
        )
        if not finished:  # a chunk message lost for good would be re-sent by the reconciler
            debits.debit_runs_resume(older_than=timedelta(0))
            finished = wait_for(
                lambda: DebitRun.objects.get(pk=run.pk).status == "finished", timeout=30
            )
        assert finished, DebitRun.objects.filter(pk=run.pk).values()
    finally:
        worker.stop()

    interrupted = DebitAttempt.objects.filter(status=AttemptStatus.PENDING).count()
    # Every worker is gone: what is still pending is asked about by key.
    debits.debit_attempts_reconcile(pending_older_than=timedelta(0))
    assert not DebitAttempt.objects.filter(status=AttemptStatus.PENDING).exists()
    # Attempts that never reached the provider are retried at the first technical step.
    with clock.travel(timedelta(minutes=6)):
        debits.debit_retries_process()

    for installment in due:
        installment.refresh_from_db()
        request = installment.debit_request
        assert installment.status == InstallmentStatus.PAID, (
            request.status,
            request.next_attempt_at,
            list(request.attempts.values_list("status", "failure_class", "decline_code")),
        )
    charges = sandbox_charges(sandbox)
    by_reference = Counter(c["reference"] for c in charges if c["status"] == "captured")
    assert by_reference == {f"bnpl.installment:{i.pk}": 1 for i in due}
    assert max(charges_by_key(sandbox).values()) == 1
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == PLANS
    assert not DebitAttempt.objects.filter(status=AttemptStatus.UNKNOWN).exists()
    print(
        f"{KILLS} kills; {interrupted} attempts left pending by a kill; "
        f"{DebitAttempt.objects.count()} attempts for {PLANS} installments"
    )
