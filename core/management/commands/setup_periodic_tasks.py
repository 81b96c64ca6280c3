from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from core.schedules import registered


class Command(BaseCommand):
    help = "Create or update every periodic job of the product in django-celery-beat."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        for schedule in registered():
            minute, hour, day_of_month, month_of_year, day_of_week = schedule.crontab.split()
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
                timezone=settings.BUSINESS_TIME_ZONE,
            )
            task, created = PeriodicTask.objects.update_or_create(
                name=schedule.name,
                defaults={
                    "task": schedule.task,
                    "crontab": crontab,
                    "description": schedule.description,
                },
            )
            self.stdout.write(
                f"{'created' if created else 'updated'}: {task.name} "
                f"({schedule.task}, {schedule.crontab})"
            )
