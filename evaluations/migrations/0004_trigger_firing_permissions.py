"""Every role may read trigger firings (they are part of the rollback record)."""

from django.db import migrations

ROLES = (
    "rollout-admin",
    "product-lead",
    "support-lead",
    "compliance-lead",
    "sre-lead",
    "compliance-reviewer",
    "auditor",
)


def grant(apps, schema_editor):
    from rollout.roles import grant_permissions

    grant_permissions(apps, "evaluations", {role: ["view_triggerfiring"] for role in ROLES})


class Migration(migrations.Migration):
    dependencies = [("evaluations", "0003_triggers_tokens")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
