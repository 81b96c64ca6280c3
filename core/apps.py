from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core: audit trail, idempotency, emails, dead letters"

    def ready(self) -> None:
        from core import deadletters  # noqa: F401  (connects the task_failure receiver)
