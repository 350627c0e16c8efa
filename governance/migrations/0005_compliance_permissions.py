"""Give the role groups the compliance permissions (design section 1).

Compliance reviewers keep legal holds, data-processing records and scheduled
reviews, and run the compliance jobs; compliance reviewers, auditors and the
compliance lead read retention receipts, holds, records and jobs. Every role
reads the scheduled reviews (leads complete them) and the daily delta reports.
Completing a review is for members of the role it is assigned to: a role check
in the service, not a permission.
"""

from django.db import migrations

EVERYONE = ["view_scheduledreview", "view_dailydeltareport"]
COMPLIANCE_VIEW = [
    *EVERYONE,
    "view_legalhold",
    "view_retentionreceipt",
    "view_jobrun",
    "view_processingrecord",
    "view_recordchange",
    "view_telemetryfield",
]

ROLE_PERMISSIONS = {
    "rollout-admin": EVERYONE,
    "product-lead": EVERYONE,
    "support-lead": EVERYONE,
    "sre-lead": EVERYONE,
    "compliance-lead": COMPLIANCE_VIEW,
    "auditor": COMPLIANCE_VIEW,
    "compliance-reviewer": [
        *COMPLIANCE_VIEW,
        "add_legalhold",
        "release_legalhold",
        "add_processingrecord",
        "change_processingrecord",
        "decide_recordchange",
        "reassign_scheduledreview",
        "run_job",
    ],
}


def grant(apps, schema_editor):
    from rollout.roles import grant_permissions

    grant_permissions(apps, "governance", ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [("governance", "0004_compliance"), ("rollout", "0002_role_groups")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
