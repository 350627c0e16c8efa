"""The input boundary for query strings and form bodies (``rollout.inputs``): one check for every parameter.

Every form field and URL parameter of every page and of the API passes
through here before a view sees it: a NUL or a lone surrogate in a name or a
value is refused with a 400 (problem+json naming the parameter on the API,
the 400 page elsewhere), so no form has to remember it and PostgreSQL never
sees it. JSON bodies are checked by the API's parser (``evaluations.parsers``).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rollout.inputs import query_problems

from .problems import API_PREFIX, problem_response

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class InputBoundaryMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        problems = list(query_problems(request.GET, "query"))
        is_api = request.path.startswith(API_PREFIX)
        if not problems and not is_api and request.content_type in _FORM_TYPES and request.method == "POST":
            problems = list(query_problems(request.POST, "form"))
        if not problems:
            return self.get_response(request)
        if is_api:
            return problem_response(
                400,
                code="invalid-parameter",
                title="A parameter cannot be read",
                detail=" ".join(p["message"] for p in problems),
                instance=request.path,
                errors=problems,
            )
        return render(request, "400.html", {"problems": problems}, status=400)
