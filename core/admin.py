from django.contrib import admin
from django.db import transaction
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from core.audit import audit_record
from core.models import AuditEntry, DeadLetter, IdempotencyRecord, OutboundEmail


class AuditedAdmin(admin.ModelAdmin):
    """Every add, change and delete made on this screen also lands in the audit trail.

    The admin calls these hooks inside the transaction of the change itself.
    """

    def _audit(self, request, obj, verb: str, message) -> None:
        audit_record(
            actor=request.user,
            action=f"admin.{verb}",
            target=obj,
            changes={"admin_message": message} if message else {},
        )

    def log_addition(self, request, obj, message):
        self._audit(request, obj, "add", message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, obj, "change", message)
        return super().log_change(request, obj, message)

    # Deletions are audited where they happen, in one transaction with them: the delete
    # view already runs in one, the bulk "delete selected" action does not.
    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            self._audit(request, obj, "delete", str(obj))
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():
            for obj in queryset:
                self._audit(request, obj, "delete", str(obj))
            super().delete_queryset(request, queryset)


class ReadOnlyAdmin(admin.ModelAdmin):
    """A screen that shows records and never changes them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ActionsOnlyAdmin(ReadOnlyAdmin):
    """Read-only screens whose list actions (which call services) staff may run.

    Change permission is granted for the list only (``obj is None``), so the change form
    never offers a Save that would write back a stale copy of the row.
    """

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and admin.ModelAdmin.has_change_permission(self, request)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "actor_label", "action", "target_type", "target_id")
    list_filter = ("action", "target_type")
    search_fields = ("target_id", "actor__username", "actor_label", "note")
    date_hierarchy = "created_at"
    list_select_related = ("actor",)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "scope", "key", "method", "path", "state", "response_status")
    list_filter = ("state",)
    search_fields = ("key", "scope")


@admin.register(DeadLetter)
class DeadLetterAdmin(ActionsOnlyAdmin):
    list_display = ("failed_at", "task_name", "exception", "replayed_at", "replay_task_id")
    list_filter = ("task_name",)
    search_fields = ("task_name", "exception", "task_id")
    actions = ["replay"]

    @admin.action(description="Replay selected tasks", permissions=["change"])
    def replay(self, request, queryset) -> None:
        from core.deadletters import dead_letter_replay

        sent = [
            dead_letter_replay(dead_letter_id=pk) for pk in queryset.values_list("pk", flat=True)
        ]
        self.message_user(request, f"Sent {len(sent)} task(s) again.")


@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "template", "to", "subject", "status", "sent_at", "attempts")
    list_filter = ("status", "template")
    search_fields = ("to", "dedupe_key", "subject")


def _needs_change_permission(name: str):
    """django-celery-beat's action ``name``, offered only to who may change the tasks."""
    base = getattr(beat_admin.PeriodicTaskAdmin, name)

    def action(self, request, queryset):
        return base(self, request, queryset)

    action.__name__ = name
    return admin.action(description=base.short_description, permissions=["change"])(action)


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    """The periodic jobs: running, enabling or pausing one needs the change permission."""

    enable_tasks = _needs_change_permission("enable_tasks")
    disable_tasks = _needs_change_permission("disable_tasks")
    toggle_tasks = _needs_change_permission("toggle_tasks")
    run_tasks = _needs_change_permission("run_tasks")
