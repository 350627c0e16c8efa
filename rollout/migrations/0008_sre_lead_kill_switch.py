"""The SRE lead (the incident commander of the escalation matrix) may pull the kill switch (issue 9, seam 8).

Fresh databases get it from ``ROLE_PERMISSIONS`` in 0002; this grants it where 0002 already ran.
"""

from django.db import migrations


def grant(apps, schema_editor):
    from rollout.roles import grant_permissions

    grant_permissions(apps, "rollout", {"sre-lead": ["operate_kill_switch"]})


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perm = Permission.objects.filter(content_type__app_label="rollout", codename="operate_kill_switch").first()
    group = Group.objects.filter(name="sre-lead").first()
    if perm and group:
        group.permissions.remove(perm)


class Migration(migrations.Migration):
    dependencies = [("rollout", "0007_readable_labels")]

    operations = [migrations.RunPython(grant, revoke)]
