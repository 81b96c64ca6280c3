"""The product's periodic jobs, declared by each app and created by one command.

Apps call ``register`` from their ``AppConfig.ready``; ``setup_periodic_tasks`` creates or
updates a django-celery-beat schedule for each, so the admin shows them and a deploy
re-creates them. Task names are strings, so core imports nothing from the apps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    name: str  # shown in the admin; unique
    task: str  # the Celery task's name
    crontab: str  # "minute hour day_of_month month_of_year day_of_week"
    description: str


_registry: dict[str, Schedule] = {}


def register(schedule: Schedule) -> None:
    _registry[schedule.name] = schedule


def registered() -> list[Schedule]:
    return sorted(_registry.values(), key=lambda s: s.name)


register(
    Schedule(
        name="Deliver queued emails",
        task="core.deliver_emails",
        crontab="* * * * *",
        description="Sends every queued email, once.",
    )
)
