"""Per-request audit context: who is acting and under which request id."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from rollout.context import acting_as, collecting_refusals, new_request_id, user_actor

from . import denials


class AuditContextMiddleware:
    """Sets the user actor and a fresh request id for everything the request writes.

    Goes after ``AuthenticationMiddleware``. The id is always generated here
    (a client-supplied one would let callers choose what the ledger says) and
    is echoed as ``X-Request-ID`` so a user can quote it. Refusals raised by
    services while the request is served (``DomainError.is_refusal``) are
    recorded as denied actions once the view has answered. The API's token
    authentication replaces the actor inside the view; the context is reset
    when the response is returned.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id()
        request.request_id = request_id
        user = getattr(request, "user", None)
        actor = user_actor(user) if user is not None and user.is_authenticated else None
        with acting_as(actor, request_id=request_id):
            with collecting_refusals() as refusals:
                response = self.get_response(request)
            # Recorded after the view: the service's transaction that raised them has rolled back by now.
            for refused_actor, error in refusals:
                denials.record_refusal(request, refused_actor, error)
        response["X-Request-ID"] = request_id
        return response
