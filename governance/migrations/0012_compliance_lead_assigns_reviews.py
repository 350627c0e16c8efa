"""The compliance lead may assign scheduled reviews too.

Only compliance reviewers could, and a reviewer may not hand a review to a role they hold (segregation of
duties), so nobody but a superuser could ever assign a review to the compliance reviewers. The compliance lead,
who supervises them, now can.
"""

from django.db import migrations


def grant(apps, schema_editor):
    from rollout.roles import grant_permissions

    grant_permissions(apps, "governance", {"compliance-lead": ["reassign_scheduledreview"]})


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    perm = Permission.objects.filter(content_type__app_label="governance", codename="reassign_scheduledreview")
    for group in Group.objects.filter(name="compliance-lead"):
        group.permissions.remove(*perm)


class Migration(migrations.Migration):
    dependencies = [("governance", "0011_readable_labels")]

    operations = [migrations.RunPython(grant, revoke)]
