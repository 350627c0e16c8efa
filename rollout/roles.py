"""The roles of design section 1, as Django groups.

Each role is a group of the same name. ``ROLE_PERMISSIONS`` says which model
permissions a group carries for this app; the other apps add theirs in their own
migrations with :func:`grant_permissions`.
"""

from __future__ import annotations

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
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._role_names = cached
    return cached


def has_role(user, role: str) -> bool:
    return str(role) in user_roles(user)
