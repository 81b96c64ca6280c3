"""Back-office screens of collections: debit runs (live totals, start a run), attempts."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from collections_ import debits, selectors
from collections_.models import DebitAttempt, DebitRun
from core import clock
from core.admin import ActionsOnlyAdmin, ReadOnlyAdmin


class StartRunForm(forms.Form):
    business_date = forms.DateField(
        help_text="Every debit due up to the end of this day (business time zone) is charged."
    )


@admin.register(DebitRun)
class DebitRunAdmin(ActionsOnlyAdmin):
    """Runs with their totals read from the attempts (one GROUP BY query for the page)."""

    list_display = (
        "id",
        "business_date",
        "status",
        "progress",
        "due_count",
        "paid",
        "failed",
        "retrying",
        "unknown",
        "started_at",
        "finished_at",
    )
    list_filter = ("status",)
    date_hierarchy = "business_date"
    readonly_fields = ("totals",)
    actions = ("resume_runs",)

    def get_queryset(self, request: HttpRequest):
        return selectors.runs_with_totals()

    @admin.display(description="Progress")
    def progress(self, run: DebitRun) -> str:
        return f"{run.chunks_done}/{run.chunks_total} chunks"

    def _bucket(self, run: DebitRun, name: str) -> str:
        count, amount = getattr(run, f"{name}_count", 0), getattr(run, f"{name}_amount", 0)
        return f"{count} ({amount} minor units)" if count else "0"

    @admin.display(description="Paid (amount)")
    def paid(self, run: DebitRun) -> str:
        return self._bucket(run, "paid")

    @admin.display(description="Failed (amount)")
    def failed(self, run: DebitRun) -> str:
        return self._bucket(run, "failed")

    @admin.display(description="Retrying (amount)")
    def retrying(self, run: DebitRun) -> str:
        return self._bucket(run, "retrying")

    @admin.display(description="Unknown (amount)")
    def unknown(self, run: DebitRun) -> str:
        return self._bucket(run, "unknown")

    @admin.display(description="Totals")
    def totals(self, run: DebitRun) -> str:
        t = selectors.run_totals(run_id=run.pk)
        return (
            f"due {run.due_count}; paid {t.paid.count} ({t.paid.amount} minor units); "
            f"failed {t.failed.count} ({t.failed.amount}); retrying {t.retrying.count} "
            f"({t.retrying.amount}); unknown {t.unknown.count} ({t.unknown.amount})"
        )

    @admin.action(
        description="Re-send unfinished chunks of the selected runs", permissions=["change"]
    )
    def resume_runs(self, request: HttpRequest, queryset) -> None:
        sent = debits.debit_runs_resume(
            older_than=timedelta(0), run_ids=list(queryset.values_list("pk", flat=True))
        )
        self.message_user(request, f"Re-sent {sent} chunk(s).", messages.SUCCESS)

    def get_urls(self):
        return [
            path(
                "start/",
                self.admin_site.admin_view(self.start_view),
                name="collections_debitrun_start",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "start_url": reverse("admin:collections_debitrun_start"),
        }
        return super().changelist_view(request, extra_context)

    def start_view(self, request: HttpRequest):
        """Start the debit run for a business date (charges are made by the workers)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = StartRunForm(request.POST or None, initial={"business_date": clock.business_date()})
        if request.method == "POST" and form.is_valid():
            run = debits.debit_run_start(
                business_date=form.cleaned_data["business_date"], actor=request.user
            )
            self.message_user(
                request,
                f"Started {run}: {run.due_count} debit(s) due in {run.chunks_total} chunk(s).",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:collections_debitrun_changelist"))
        return TemplateResponse(
            request,
            "admin/collections/debitrun/start.html",
            {**self.admin_site.each_context(request), "form": form, "title": "Start a debit run"},
        )


@admin.register(DebitAttempt)
class DebitAttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "request",
        "attempt_no",
        "run",
        "status",
        "failure_class",
        "decline_code",
        "amount",
        "currency",
        "created_at",
        "next_retry_at",
    )
    list_filter = ("status", "failure_class")
    search_fields = ("idempotency_key", "decline_code")
    list_select_related = ("request__installment", "run")
    raw_id_fields = ("request", "run", "payment_transaction")


# The delinquency screens (write-off, recovery, late fees) live in their own module.
from collections_ import admin_delinquency  # noqa: E402, F401
