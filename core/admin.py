from django.contrib import admin

from core.models import AuditEntry, IdempotencyRecord


class ReadOnlyAdmin(admin.ModelAdmin):
    """A screen that shows records and never changes them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
