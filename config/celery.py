import gc
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("oms")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect  # solo and thread pools: the worker's own process
@worker_process_init.connect  # prefork: each child, once it is set up
def _freeze_startup_objects(**_kwargs) -> None:
    """Keep the garbage collector off what a worker loaded at start-up.

    Django, the apps and Celery leave a few hundred thousand long-lived objects; every full
    collection walked them all again, and a debit-run chunk (tens of thousands of short-lived
    objects) triggered several. ``gc.freeze`` moves them to a generation the collector never
    scans; what the tasks allocate is collected as before.
    """
    gc.freeze()
