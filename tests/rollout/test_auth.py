"""Logging in through django-allauth (rollout/auth.py): the same /login/ as before, sign-up closed, the local form
switched off but for a break-glass superuser, the admin's login page the same view."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_login_page_has_the_fields_it_always_had(client):
    html = client.get("/login/").content.decode()
    assert 'name="username"' in html and 'id="id_username"' in html
    assert 'name="password"' in html and 'id="id_password"' in html
    assert "Break-glass" not in html


def test_login_goes_to_next_and_records_the_password_as_the_method(client, users):
    response = client.post("/login/", {"username": "auditor", "password": "pw", "next": "/audit/"})
    assert (response.status_code, response["Location"]) == (302, "/audit/")
    [record] = client.session["account_authentication_methods"]
    assert record["method"] == "password" and record["username"] == "auditor"


def test_signup_is_closed(client):
    response = client.get("/accounts/signup/")
    assert response.status_code == 200
    assert "Sign Up Closed" in response.content.decode()
    before = get_user_model().objects.count()
    response = client.post("/accounts/signup/", {"username": "newcomer", "password1": "Xy7!long-password"})
    assert "Sign Up Closed" in response.content.decode()
    assert get_user_model().objects.count() == before


def test_local_login_switched_off_admits_only_a_superuser(client, users, settings):
    settings.LOCAL_LOGIN_ENABLED = False
    make_user("breakglass", is_superuser=True, is_staff=True)
    html = client.get("/login/").content.decode()
    assert "Break-glass login (superusers only)" in html
    refused = client.post("/login/", {"username": "auditor", "password": "pw"})
    assert refused.status_code == 200
    assert "Local login is switched off: sign in with the identity provider." in refused.content.decode()
    assert "_auth_user_id" not in client.session
    response = client.post("/login/", {"username": "breakglass", "password": "pw"})
    assert (response.status_code, response["Location"]) == (302, "/")
    assert client.session["_auth_user_id"] == str(get_user_model().objects.get(username="breakglass").pk)


def test_admin_login_is_the_dashboard_login_and_returns_to_the_admin(client):
    make_user("root", is_superuser=True, is_staff=True)
    page = client.get("/admin/login/")
    assert page.templates[0].name == "registration/login.html"
    response = client.post("/admin/login/", {"username": "root", "password": "pw"})
    assert (response.status_code, response["Location"]) == (302, "/admin/")
    assert client.get("/admin/").status_code == 200


def test_no_allauth_notice_on_login_or_logout(client, users):
    client.post("/login/", {"username": "auditor", "password": "pw"})
    assert "Successfully signed in" not in client.get("/").content.decode()
    client.post("/logout/")
    assert "signed out" not in client.get("/login/").content.decode()
