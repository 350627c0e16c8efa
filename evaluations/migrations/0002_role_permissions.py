"""Give the role groups this app's permissions."""

from django.db import migrations

ROLE_PERMISSIONS = {
    "rollout-admin": [
        "view_evaluationrun",
        "view_runoutput",
        "view_monitoringsample",
        "view_successcriterion",
        "change_successcriterion",
        "add_successcriterion",
    ],
    **{
        role: ["view_evaluationrun", "view_runoutput", "view_monitoringsample", "view_successcriterion"]
        for role in (
            "product-lead",
            "support-lead",
            "compliance-lead",
            "sre-lead",
            "compliance-reviewer",
            "auditor",
        )
    },
}


def grant(apps, schema_editor):
    from rollout.roles import grant_permissions

    grant_permissions(apps, "evaluations", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("evaluations", "0001_initial"), ("rollout", "0002_role_groups")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
