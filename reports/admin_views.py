"""Back-office pages of reports (plain admin views: reports owns no models)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from core import clock
from reports import selectors
from reports.api.serializers import CollectionsQuerySerializer, bucket_row, week_row


def collections_kpis(request: HttpRequest) -> TemplateResponse:
    """The collections KPIs of ``GET /api/v1/reports/collections``, for the admin.

    Staff who may view debit attempts see it, as they see the figures it adds up.
    """
    if not request.user.has_perm("collections.view_debitattempt"):
        raise PermissionDenied
    default_from, default_to = selectors.default_window(clock.business_date())
    query = CollectionsQuerySerializer(data=request.GET)
    errors = None
    if request.GET and not query.is_valid():
        errors = query.errors
    data = query.validated_data if errors is None and request.GET else {}
    due_to = data.get("due_to", default_to)
    due_from = data.get("due_from", min(default_from, due_to))
    report = selectors.collections_report(due_from=due_from, due_to=due_to)
    return TemplateResponse(
        request,
        "admin/reports/collections.html",
        {
            **admin.site.each_context(request),
            "title": "Collections KPIs",
            "errors": errors,
            "due_from": due_from,
            "due_to": due_to,
            "weeks": [week_row(w) for w in report.weeks],
            "totals": [week_row(w) for w in report.totals],
            "buckets": [bucket_row(b) for b in report.buckets],
        },
    )
