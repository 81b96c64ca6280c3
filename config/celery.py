import gc
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("oms")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


GC_YOUNG_THRESHOLD = 10_000


@worker_ready.connect  # solo and thread pools: the worker's own process
@worker_process_init.connect  # prefork: each child, once it is set up
def _freeze_startup_objects(**_kwargs) -> None:
    """Keep the garbage collector off what a worker loaded at start-up.

    Django, the apps and Celery leave a few hundred thousand long-lived objects; every full
    collection walked them all again, and a debit-run chunk (tens of thousands of short-lived
    objects) triggered several. ``gc.freeze`` moves them to a generation the collector never
    scans.

    What the tasks allocate is then collected every ``GC_YOUNG_THRESHOLD`` allocations
    rather than Python's 700: a chunk's rows and records are freed by reference counting
    when it ends, and a collection every 700 allocations mostly re-walked objects still in
    use (a 5,000-installment run in-process spent 58 ms collecting, 22 ms with this).
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
