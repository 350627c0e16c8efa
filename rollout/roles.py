"""The roles of design section 1, as Django groups.

Each role is a group of the same name. ``ROLE_PERMISSIONS`` says which model
permissions a group carries for this app; the other apps add theirs in their own
migrations with :func:`grant_permissions`.
"""

from __future__ import annotations

import functools

from django.db import models


class Role(models.TextChoices):
    ROLLOUT_ADMIN = "rollout-admin", "Rollout admin"
    PRODUCT_LEAD = "product-lead", "Product lead"
    SUPPORT_LEAD = "support-lead", "Support lead"
    COMPLIANCE_LEAD = "compliance-lead", "Compliance lead"
    SRE_LEAD = "sre-lead", "SRE lead"
    COMPLIANCE_REVIEWER = "compliance-reviewer", "Compliance reviewer"
    AUDITOR = "auditor", "Auditor"


LEAD_ROLES: tuple[Role, ...] = (
    Role.PRODUCT_LEAD,
    Role.SUPPORT_LEAD,
    Role.COMPLIANCE_LEAD,
    Role.SRE_LEAD,
)

ROLLOUT_MODELS = (
    "rollout",
    "phase",
    "escalationcontact",
    "tenant",
    "cohort",
    "cohortmembership",
    "featureflag",
    "flagexposure",
    "checklistitem",
    "communication",
    "phasefeedback",
    "incident",
    "incidentevent",
    "incidentstep",
)

_VIEW_ALL = [f"view_{m}" for m in ROLLOUT_MODELS]

# Codenames in the ``rollout`` app, per role. Nobody gets ``delete_*``: the
# record of a rollout is never deleted through the product.
ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.ROLLOUT_ADMIN: [
        *_VIEW_ALL,
        "add_rollout",
        "change_rollout",
        "change_phase",
        "add_escalationcontact",
        "change_escalationcontact",
        "add_tenant",
        "change_tenant",
        "change_cohort",
        "add_cohortmembership",
        "change_flagexposure",
        "change_checklistitem",
        "add_communication",
        "change_communication",
        "add_phasefeedback",
        "add_incident",
        "change_incident",
        "operate_kill_switch",
        "roll_back_rollout",
    ],
    Role.PRODUCT_LEAD: [*_VIEW_ALL],
    Role.SUPPORT_LEAD: [*_VIEW_ALL, "add_phasefeedback"],
    Role.COMPLIANCE_LEAD: [*_VIEW_ALL],
    # The incident commander of the escalation matrix: may pull the kill switch (break-glass, recorded like any).
    Role.SRE_LEAD: [*_VIEW_ALL, "operate_kill_switch"],
    Role.COMPLIANCE_REVIEWER: [*_VIEW_ALL],
    Role.AUDITOR: [*_VIEW_ALL],
}


def ensure_permissions(apps, app_label: str) -> None:
    """Create the permissions of ``app_label`` now, not at post_migrate.

    A data migration that hands permissions to groups runs before Django's
    post_migrate creates them, so it creates them itself.
    """
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config(app_label)
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None


def grant_permissions(apps, app_label: str, role_permissions: dict[str, list[str]]) -> None:
    """Give each role's group the listed permissions of ``app_label`` (idempotent)."""
    ensure_permissions(apps, app_label)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in role_permissions.items():
        group, _ = Group.objects.get_or_create(name=str(role))
        perms = Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
        found = set(perms.values_list("codename", flat=True))
        missing = set(codenames) - found
        if missing:
            raise RuntimeError(f"Unknown permissions for {app_label}: {sorted(missing)}")
        group.permissions.add(*perms)


def require_perm(actor, perm: str, message: str = "Your roles do not allow this action.") -> None:
    """Services' authorization: a user needs the permission; ``None`` is the system itself
    (tasks, commands, triggers, demo data)."""
    from .errors import ActionNotAllowed

    if actor is not None and not actor.has_perm(perm):
        raise ActionNotAllowed(message)


def user_roles(user) -> frozenset[str]:
    """The role names a user holds, cached on the user object for the request."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_role_names", None)
    if cached is None:
        if hasattr(user, "_perm_cache") or not user.is_active or user.is_superuser:
            cached = frozenset(user.groups.values_list("name", flat=True))
        else:
            cached = _load_roles_and_permissions(user)
        user._role_names = cached
    return cached


def _load_roles_and_permissions(user) -> frozenset[str]:
    """The user's group names, and their permissions for ModelBackend, in one query instead of three.

    Every logged-in page reads the roles (the context processor) and then ``perms``/``has_perm``, which
    ModelBackend answers with two queries (the user's own permissions, their groups' permissions) and
    caches on the user object as ``_user_perm_cache``, ``_group_perm_cache`` and ``_perm_cache``. At
    about half a millisecond of CPU a query, one ``UNION ALL`` fills all three caches with exactly the
    sets ModelBackend builds (``"app_label.codename"``). Only for an active non-superuser: an inactive
    user has no permissions before any cache is read and a superuser's are every permission, both left
    to ModelBackend (the axes and allauth backends are both ModelBackends, sharing these caches).
    """
    from django.contrib.auth.models import Permission
    from django.db import connections, router

    connection = connections[router.db_for_read(Permission)]
    names: set[str] = set()
    own: set[str] = set()
    from_groups: set[str] = set()
    with connection.cursor() as cursor:
        cursor.execute(_access_sql(user._meta.model, connection.alias), [user.pk, user.pk, user.pk])
        for kind, app_label, name in cursor.fetchall():
            if kind == 0:
                names.add(name)
            else:
                (own if kind == 1 else from_groups).add(f"{app_label}.{name}")
    user._user_perm_cache = own
    user._group_perm_cache = from_groups
    user._perm_cache = {*own, *from_groups}
    return frozenset(names)


@functools.cache
def _access_sql(user_model, alias: str) -> str:
    """The one query of :func:`_load_roles_and_permissions`, built once per process (tables from the models)."""
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections

    user_groups = user_model._meta.get_field("groups").remote_field.through._meta
    user_perms = user_model._meta.get_field("user_permissions").remote_field.through._meta
    group_perms = Group._meta.get_field("permissions").remote_field.through._meta
    q = connections[alias].ops.quote_name
    ug_user, ug_group = (q(f.column) for f in _through_columns(user_groups, user_model, Group))
    up_user, up_perm = (q(f.column) for f in _through_columns(user_perms, user_model, Permission))
    gp_group, gp_perm = (q(f.column) for f in _through_columns(group_perms, Group, Permission))
    g, p, ct = (q(m._meta.db_table) for m in (Group, Permission, ContentType))
    ug, up, gp = (q(m.db_table) for m in (user_groups, user_perms, group_perms))
    # Only quoted table and column names of the auth models go into the text; the user's id is a parameter.
    return (
        f"SELECT 0, NULL, {g}.{q('name')} FROM {g} INNER JOIN {ug} ON {ug}.{ug_group} = {g}.{q('id')}"  # noqa: S608
        f" WHERE {ug}.{ug_user} = %s"
        f" UNION ALL SELECT 1, {ct}.{q('app_label')}, {p}.{q('codename')} FROM {p}"
        f" INNER JOIN {up} ON {up}.{up_perm} = {p}.{q('id')}"
        f" INNER JOIN {ct} ON {ct}.{q('id')} = {p}.{q('content_type_id')}"
        f" WHERE {up}.{up_user} = %s"
        f" UNION ALL SELECT 2, {ct}.{q('app_label')}, {p}.{q('codename')} FROM {p}"
        f" INNER JOIN {gp} ON {gp}.{gp_perm} = {p}.{q('id')} INNER JOIN {ug} ON {ug}.{ug_group} = {gp}.{gp_group}"
        f" INNER JOIN {ct} ON {ct}.{q('id')} = {p}.{q('content_type_id')} WHERE {ug}.{ug_user} = %s"
    )


def _through_columns(through_meta, from_model, to_model):
    """The (from, to) foreign keys of an auto-created many-to-many table."""
    fks = [f for f in through_meta.get_fields() if getattr(f, "many_to_one", False)]
    source = next(f for f in fks if f.related_model is from_model)
    target = next(f for f in fks if f.related_model is to_model and f is not source)
    return source, target


def has_role(user, role: str) -> bool:
    return str(role) in user_roles(user)
