from django.contrib import admin

from core.admin import ReadOnlyAdmin
from core.money import Money
from ledger.models import Account, JournalEntry, Posting


def _money(minor: int, currency: str) -> str:
    return str(Money(minor, currency))


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("code", "purpose", "currency", "normal_side", "balance_display", "customer")
    list_filter = ("purpose", "currency")
    search_fields = ("code", "customer__user__email")
    list_select_related = ("customer__user",)

    @admin.display(description="Balance", ordering="balance")
    def balance_display(self, obj: Account) -> str:
        return _money(obj.balance, obj.currency)


class PostingInline(admin.TabularInline):
    model = Posting
    extra = 0
    can_delete = False
    fields = ("account", "side", "amount_display")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Side")
    def side(self, obj: Posting) -> str:
        return "Debit" if obj.amount > 0 else "Credit"

    @admin.display(description="Amount")
    def amount_display(self, obj: Posting) -> str:
        return _money(abs(obj.amount), obj.currency)


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "kind", "reference_type", "reference_id", "memo")
    list_filter = ("kind",)
    search_fields = ("reference_id", "memo")
    date_hierarchy = "created_at"
    inlines = [PostingInline]


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdmin):
    list_display = ("id", "entry", "account", "amount", "currency")
    list_filter = ("currency", "account__purpose")
    search_fields = ("account__code",)
    list_select_related = ("entry", "account")
