from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core: audit trail, idempotency, emails, dead letters"

    def ready(self) -> None:
        from core import (  # noqa: F401
            db,  # registers the __any lookup
            deadletters,  # connects the task_failure receiver
        )
