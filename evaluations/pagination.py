"""The API's page-number pagination, strict about its parameter: ``?page=`` is a positive integer or absent.

DRF's own takes an empty value as page 1 and ``last`` as the last page, and
answers anything else with a 404; the schema says ``page`` is an integer, so
anything else is a 400 (``invalid-parameter``), and a page past the end a 404.
"""

from __future__ import annotations

import re

from rest_framework.pagination import PageNumberPagination

from .errors import InvalidParameter

MAX_PAGE = 999_999_999
_PAGE = re.compile(r"[1-9][0-9]{0,8}")


class StrictPageNumberPagination(PageNumberPagination):
    def get_page_number(self, request, paginator) -> int:
        values = request.query_params.getlist(self.page_query_param)
        if not values:
            return 1
        if len(values) > 1 or not _PAGE.fullmatch(values[0]):
            raise InvalidParameter(f"page must be one integer from 1 to {MAX_PAGE}.")
        return int(values[0])

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"].update(minimum=1, maximum=MAX_PAGE)
        return parameters
