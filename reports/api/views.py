from drf_spectacular.utils import extend_schema
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import clock
from core.api.schema import error_responses
from reports import selectors
from reports.api.serializers import (
    CollectionsQuerySerializer,
    CollectionsReportSerializer,
    bucket_row,
    week_row,
)


class CanViewDebitAttempts(BasePermission):
    """Staff who may view debit attempts, as on the admin page of the same figures."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.user.has_perm("collections.view_debitattempt")


class CollectionsReportApi(APIView):
    """Collections KPIs for staff: success and recovery rates by due week, amounts by bucket."""

    permission_classes = [IsAdminUser, CanViewDebitAttempts]

    @extend_schema(
        operation_id="reports_collections",
        tags=["reports"],
        summary="Collections KPIs (staff only)",
        description=(
            "For staff with the permission to view debit attempts "
            "(collections.view_debitattempt), as the admin page; others 403 "
            "auth.permission_denied."
        ),
        parameters=[CollectionsQuerySerializer],
        responses={200: CollectionsReportSerializer, **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = CollectionsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        default_from, default_to = selectors.default_window(clock.business_date())
        due_to = query.validated_data.get("due_to", default_to)
        due_from = query.validated_data.get("due_from", min(default_from, due_to))
        CollectionsQuerySerializer(data={"due_from": due_from, "due_to": due_to}).is_valid(
            raise_exception=True
        )
        report = selectors.collections_report(due_from=due_from, due_to=due_to)
        return Response(
            CollectionsReportSerializer(
                {
                    "due_from": report.due_from,
                    "due_to": report.due_to,
                    "weeks": [week_row(w) for w in report.weeks],
                    "totals": [week_row(w) for w in report.totals],
                    "buckets": [bucket_row(b) for b in report.buckets],
                }
            ).data
        )
