"""API tokens: stored only as a hash, scopes, expiry, revocation, last use; the command and the admin."""

from __future__ import annotations

import datetime as dt
import hashlib
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from evaluations import services
from evaluations.errors import InvalidToken, TokenExpired, TokenInvalid, TokenRevoked
from evaluations.models import ApiToken


@pytest.mark.django_db
def test_token_is_stored_only_as_its_sha256():
    token, raw = services.api_token_create(name="harness", scopes=["ingest"], actor=None)
    assert raw.startswith("rgd_") and len(raw) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    row = ApiToken.objects.filter(pk=token.pk).values()[0]
    assert raw not in {str(v) for v in row.values()}
    assert stored.prefix == raw[:10]
    # History keeps who created it and why, never the digest.
    record = stored.history.get()
    assert not hasattr(record, "token_hash")
    assert "scopes ingest" in record.history_change_reason


@pytest.mark.django_db
def test_authenticate_expiry_revocation_and_last_use():
    token, raw = services.api_token_create(name="h", scopes=["read"], actor=None, expires_in_days=1)
    assert services.api_token_authenticate(raw).pk == token.pk
    first_use = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first_use is not None
    # Within a minute the stamp is not rewritten (no write per request).
    services.api_token_authenticate(raw)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first_use
    with pytest.raises(TokenInvalid):
        services.api_token_authenticate(raw + "x")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(TokenExpired):
        services.api_token_authenticate(raw)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None)
    services.api_token_revoke(token=token, actor=None, reason="leaked")
    with pytest.raises(TokenRevoked):
        services.api_token_authenticate(raw)
    with pytest.raises(InvalidToken):
        services.api_token_revoke(token=token, actor=None)
    assert ApiToken.objects.get(pk=token.pk).history.first().history_change_reason == "leaked"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["admin"]}, "scopes"),
        ({"name": "x", "scopes": ["read"], "expires_in_days": 0}, "expires_in_days"),
    ],
)
def test_bad_token_requests_are_refused(kwargs, field):
    with pytest.raises(InvalidToken) as exc:
        services.api_token_create(actor=None, **kwargs)
    assert exc.value.field == field
    assert ApiToken.objects.count() == 0


@pytest.mark.django_db
def test_create_api_token_command_prints_the_token_once(client, rollout):
    out, err = StringIO(), StringIO()
    call_command(
        "create_api_token",
        "--name",
        "ci-harness",
        "--scopes",
        "ingest,read",
        "--expires-in-days",
        "30",
        stdout=out,
        stderr=err,
    )
    raw = out.getvalue().strip()
    token = ApiToken.objects.get(name="ci-harness")
    assert token.token_hash == services.hash_token(raw)
    assert token.scopes == ["ingest", "read"]
    assert dt.timedelta(days=29, hours=23) < token.expires_at - timezone.now() <= dt.timedelta(days=30)
    assert "Shown once" in err.getvalue()
    assert client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    with pytest.raises(CommandError, match="exists"):
        call_command("create_api_token", "--name", "ci-harness", "--scopes", "read", stdout=StringIO())


@pytest.mark.django_db
def test_admin_creates_a_token_showing_it_once_and_revokes(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(superuser)
    response = client.post(
        "/admin/evaluations/apitoken/add/",
        {"name": "from-admin", "scopes": ["read"], "expires_in_days": ""},
        follow=True,
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(name="from-admin")
    shown = [str(m) for m in response.context["messages"]]
    raw = next(part for m in shown for part in m.split() if part.startswith("rgd_"))
    assert services.hash_token(raw) == token.token_hash
    page = client.get(f"/admin/evaluations/apitoken/{token.pk}/change/")
    assert raw not in page.content.decode() and token.token_hash not in page.content.decode()
    client.post("/admin/evaluations/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == superuser
