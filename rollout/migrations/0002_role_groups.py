"""Create a Django group per role (design section 1) with this app's permissions."""

from django.db import migrations


def create_role_groups(apps, schema_editor):
    from rollout.roles import ROLE_PERMISSIONS, grant_permissions

    grant_permissions(apps, "rollout", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_role_groups, migrations.RunPython.noop)]
