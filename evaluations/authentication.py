"""Bearer-token authentication and scope checks of the API (kept apart from the views: DRF imports these
from its settings while ``rest_framework.views`` loads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from rollout.context import Actor, set_actor

from . import services
from .errors import TokenInvalid
from .models import ApiToken


@dataclass(frozen=True)
class TokenPrincipal:
    """``request.user`` for a token: not a Django user, so it can never pass a page's login check."""

    token: ApiToken
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_superuser: bool = False

    def get_username(self) -> str:
        return f"token:{self.token.name}"

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def __str__(self) -> str:
        return self.get_username()


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``; sets the audit actor to the token."""

    def authenticate(self, request) -> tuple[TokenPrincipal, ApiToken] | None:
        header = get_authorization_header(request).decode("latin-1").strip()
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise AuthenticationFailed("Send the token as 'Authorization: Bearer <token>'.", code="invalid-token")
        try:
            token = services.api_token_authenticate(raw.strip())
        except TokenInvalid as exc:
            raise AuthenticationFailed(exc.message, code=exc.code) from exc
        set_actor(Actor(kind="token", name=token.name, token_id=token.pk))
        return TokenPrincipal(token), token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class HasScope(BasePermission):
    """The token must carry the view's ``required_scope``: a missing token is 401, a missing scope 403."""

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return False
        scope = getattr(view, "required_scope", None)
        if scope and not token.has_scope(scope):
            self.message = f"This token lacks the '{scope}' scope."
            return False
        return True
