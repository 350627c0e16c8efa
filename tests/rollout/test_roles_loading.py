"""user_roles loads the group names and ModelBackend's permission caches in one query (issue 10).

Each user is compared with a fresh copy of itself read the way Django does it (ModelBackend's own
queries, no roles read first): the same role names, the same user, group and all permissions, the same
answers to has_perm/has_module_perms through every backend in AUTHENTICATION_BACKENDS.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from rollout.roles import Role, user_roles
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

PERMS = ["rollout.view_rollout", "rollout.change_rollout", "rollout.operate_kill_switch", "governance.view_auditentry"]


def _django_view(user_id: int) -> dict:
    """What Django's backends say about a freshly read user, roles read last."""
    user = get_user_model().objects.get(pk=user_id)
    view = {
        "all": user.get_all_permissions(),
        "user": user.get_user_permissions(),
        "group": user.get_group_permissions(),
        "has": [user.has_perm(p) for p in PERMS],
        "modules": [user.has_module_perms(a) for a in ("rollout", "governance", "auth")],
    }
    view["roles"] = frozenset(user.groups.values_list("name", flat=True))
    return view


def _combined_view(user_id: int, django_assert_max_num_queries) -> dict:
    user = get_user_model().objects.get(pk=user_id)
    with django_assert_max_num_queries(1):
        roles = user_roles(user)
        view = {
            "all": user.get_all_permissions(),
            "user": user.get_user_permissions(),
            "group": user.get_group_permissions(),
            "has": [user.has_perm(p) for p in PERMS],
            "modules": [user.has_module_perms(a) for a in ("rollout", "governance", "auth")],
        }
    view["roles"] = roles
    return view


def _users(role_groups) -> list:
    own_perm = Permission.objects.get(content_type__app_label="rollout", codename="change_rollout")
    plain = make_user("plain")
    direct = make_user("direct")
    direct.user_permissions.add(own_perm)
    both = make_user("both", Role.AUDITOR, Role.ROLLOUT_ADMIN, Role.SRE_LEAD)
    both.user_permissions.add(own_perm)  # also from the admin group: a set, once
    empty_group = make_user("empty-group")
    empty_group.groups.add(Group.objects.create(name="no-permissions"))
    return [make_user(role.value, role.value) for role in Role] + [plain, direct, both, empty_group]


def test_one_query_gives_what_django_reads(role_groups, django_assert_max_num_queries):
    for user in _users(role_groups):
        expected = _django_view(user.pk)
        assert _combined_view(user.pk, django_assert_max_num_queries) == expected, user.username
    # The data was not trivial: someone had each kind of permission and some answers were no.
    assert any(_django_view(u.pk)["user"] for u in get_user_model().objects.all())
    assert any(False in _django_view(u.pk)["has"] for u in get_user_model().objects.all())


@pytest.mark.parametrize("extra", [{"is_active": False}, {"is_superuser": True}])
def test_inactive_and_superusers_are_left_to_model_backend(role_groups, extra, django_assert_num_queries):
    user = make_user("special", Role.AUDITOR, **extra)
    user.user_permissions.add(Permission.objects.get(codename="change_rollout"))
    fresh = get_user_model().objects.get(pk=user.pk)
    with django_assert_num_queries(1):
        assert user_roles(fresh) == frozenset({Role.AUDITOR.value})
    assert not hasattr(fresh, "_perm_cache")
    assert _django_view(user.pk) == {
        **_combined_view_unbounded(user.pk),
        "roles": frozenset({Role.AUDITOR.value}),
    }
    assert fresh.has_perm("rollout.change_rollout") is bool(extra.get("is_superuser"))


def _combined_view_unbounded(user_id: int) -> dict:
    user = get_user_model().objects.get(pk=user_id)
    user_roles(user)
    return {
        "all": user.get_all_permissions(),
        "user": user.get_user_permissions(),
        "group": user.get_group_permissions(),
        "has": [user.has_perm(p) for p in PERMS],
        "modules": [user.has_module_perms(a) for a in ("rollout", "governance", "auth")],
    }


def test_permissions_read_first_keep_modelbackend_queries(role_groups, django_assert_num_queries):
    """A view that asks has_perm before the roles: ModelBackend's two queries, then only the names."""
    user = make_user("early", Role.ROLLOUT_ADMIN)
    fresh = get_user_model().objects.get(pk=user.pk)
    with django_assert_num_queries(3):
        assert fresh.has_perm("rollout.change_rollout")
        assert user_roles(fresh) == frozenset({Role.ROLLOUT_ADMIN.value})
