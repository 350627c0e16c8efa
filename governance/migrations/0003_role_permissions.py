"""Give the role groups this app's permissions (design section 1).

Rollout admins request, apply and withdraw transitions and set the approving
roles; leads sign off plans and decide transitions; the audit page is for
leads, compliance reviewers and auditors; only auditors export the ledger.
"""

from django.db import migrations

VIEW = [
    "view_plansignoff",
    "view_approvingrole",
    "view_transitionrequest",
    "view_transitionapproval",
]
LEAD = [*VIEW, "add_plansignoff", "add_transitionapproval", "view_auditevent"]

ROLE_PERMISSIONS = {
    "rollout-admin": [
        *VIEW,
        "add_transitionrequest",
        "apply_transitionrequest",
        "withdraw_transitionrequest",
        "change_approvingrole",
    ],
    "product-lead": LEAD,
    "support-lead": LEAD,
    "compliance-lead": LEAD,
    "sre-lead": LEAD,
    "compliance-reviewer": [*VIEW, "view_auditevent"],
    "auditor": [*VIEW, "view_auditevent", "export_auditevent"],
}


def grant(apps, schema_editor):
    from rollout.roles import grant_permissions

    grant_permissions(apps, "governance", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("governance", "0002_ledger_append_only"), ("rollout", "0002_role_groups")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
