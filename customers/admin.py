from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import AuditedAdmin
from customers import services
from customers.models import Customer, KycEvent, KycRequirement


class KycEventInline(admin.TabularInline):
    model = KycEvent
    extra = 0
    can_delete = False
    fields = ("decided_at", "status", "decided_by", "note")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Customer)
class CustomerAdmin(AuditedAdmin):
    list_display = ("id", "__str__", "tier", "kyc_status", "kyc_updated_at", "created_at")
    list_filter = ("kyc_status", "tier", "user__groups")
    search_fields = ("user__email", "user__username", "user__first_name", "user__last_name")
    list_select_related = ("user",)
    readonly_fields = ("user", "kyc_status", "kyc_updated_at", "created_at")
    fields = ("user", "tier", "phone", "kyc_status", "kyc_updated_at", "created_at")
    inlines = [KycEventInline]
    actions = ["approve_kyc", "reject_kyc"]

    def has_add_permission(self, request) -> bool:
        return False  # customers sign up through the API

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # their orders and ledger accounts refer to them

    @admin.action(description="Approve KYC of selected customers", permissions=["change"])
    def approve_kyc(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        for customer_id in queryset.values_list("id", flat=True):
            services.customer_kyc_approve(
                customer_id=customer_id, actor=request.user, note="Approved in the admin"
            )
        self.message_user(
            request, f"KYC approved for {queryset.count()} customer(s).", messages.SUCCESS
        )

    @admin.action(description="Reject KYC of selected customers", permissions=["change"])
    def reject_kyc(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        for customer_id in queryset.values_list("id", flat=True):
            services.customer_kyc_reject(
                customer_id=customer_id, actor=request.user, note="Rejected in the admin"
            )
        self.message_user(
            request, f"KYC rejected for {queryset.count()} customer(s).", messages.WARNING
        )


@admin.register(KycRequirement)
class KycRequirementAdmin(admin.ModelAdmin):
    list_display = ("feature", "created_at")
    fields = ("feature",)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        services.kyc_requirement_set(feature=obj.feature, required=True, actor=request.user)
        saved = KycRequirement.objects.get(feature=obj.feature)
        obj.pk, obj.created_at = saved.pk, saved.created_at

    def delete_model(self, request, obj) -> None:
        services.kyc_requirement_set(feature=obj.feature, required=False, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for requirement in queryset:
            self.delete_model(request, requirement)
