from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

MAX_PAGE = 1_000_000


class Pagination(PageNumberPagination):
    """Page numbers. ``page`` is a whole number from 1 to ``MAX_PAGE`` and ``page_size`` one
    from 1 to ``max_page_size``, as the schema publishes; anything else is a 400 (DRF would
    quietly use the default, or fail on a number of thousands of digits)."""

    page_size_query_param = "page_size"
    max_page_size = 200

    def _whole(self, request, name: str, maximum: int) -> None:
        raw = request.query_params.get(name)
        if raw is None:
            return
        # The length test first: int() of thousands of digits raises, and costs.
        if not (
            raw.isascii()
            and raw.isdigit()
            and len(raw) <= len(str(maximum))
            and 1 <= int(raw) <= maximum
        ):
            raise ValidationError({name: [f"A whole number from 1 to {maximum}."]})

    def paginate_queryset(self, queryset, request, view=None):
        self._whole(request, self.page_query_param, MAX_PAGE)
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request) -> int:
        self._whole(request, self.page_size_query_param, self.max_page_size)
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        bounds = {self.page_query_param: MAX_PAGE, self.page_size_query_param: self.max_page_size}
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"].update(minimum=1, maximum=bounds[parameter["name"]])
        return parameters
