"""Journey 3: an auditor exports a filtered range of the ledger as CSV and JSON Lines, and both files verify offline
with ``manage.py verify_audit_log --file`` and no flag; nothing on their pages changes anything; a forged POST to a
write endpoint answers 403 and changes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from governance.models import AuditEvent, TransitionRequest
from rollout.demo import MAIN_SLUG
from rollout.models import FlagExposure, Rollout

from .helpers import MAIN, verify_export, write_controls

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_an_auditor_exports_a_filtered_range_that_verifies_offline(start, readme_shot, tmp_path):
    j = start("3-auditor-export")
    page = j.page
    j.login("auditor")
    j.check("home")
    assert write_controls(page) == []
    page.click(f"#rollouts >> text={Rollout.objects.get(slug=MAIN_SLUG).name}")
    j.check("rollout")
    assert write_controls(page) == []
    request = TransitionRequest.objects.filter(rollout__slug=MAIN_SLUG).order_by("-pk").first()
    j.goto(request.get_absolute_url(), "transition request")
    assert write_controls(page) == []
    assert page.locator("[data-form=decide]").count() == 0

    j.nav("Audit log")
    j.check("audit log")
    assert write_controls(page) == []
    # A range: from the second the first entry about the main rollout was written up to (excluding) a minute
    # from now. The seed writes its whole ledger within a second or two, so the range starts on that second.
    first = AuditEvent.objects.filter(rollout_id=Rollout.objects.get(slug=MAIN_SLUG).pk).order_by("sequence").first()
    since = first.at.replace(microsecond=0)
    until = (timezone.now() + dt.timedelta(minutes=1)).replace(microsecond=0)
    page.fill("#id_since", since.strftime("%Y-%m-%dT%H:%M:%SZ"))
    page.fill("#id_until", until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    page.select_option("#id_rollout", MAIN_SLUG)
    page.click("#audit-filter button[type=submit]")
    page.wait_for_url("**/audit/?*")
    j.check("audit log filtered")
    assert write_controls(page) == []
    shown = page.locator("#audit-entries tbody.audit-entry").count()
    assert shown > 0
    readme_shot(j, "audit-export")

    files = {}
    for fmt in ("csv", "jsonl"):
        with page.expect_download() as download:
            page.click(f"[data-action=export-{fmt}]")
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        assert path.suffix == f".{fmt}"
        files[fmt] = path
        # What the export must hold: the filter's entries written before the export's own ledger entry.
        export = AuditEvent.objects.filter(action="audit.export").order_by("-sequence").first()
        expected = AuditEvent.objects.filter(
            rollout_id=first.rollout_id,
            at__gte=since,
            at__lt=until,
            sequence__lt=export.sequence,
        ).count()
        verified = verify_export(path)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith(f"Audit ledger intact: {expected} entries"), verified.stdout
        assert f"Matches its manifest: export of rollout {MAIN_SLUG}, since " in verified.stdout
    # The same check catches a tampered file: one line less in the JSON Lines export.
    lines = files["jsonl"].read_text().splitlines(keepends=True)
    assert len(lines) == expected + 1  # the manifest, then one line per entry
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:2] + lines[3:]))
    assert verify_export(cut).returncode == 1

    # Each export is in the ledger, by the auditor.
    exports = AuditEvent.objects.filter(action="audit.export").order_by("sequence")
    assert [e.actor_name for e in exports] == ["auditor", "auditor"]

    # A forged POST from the auditor's own session (valid CSRF token) to write endpoints: 403, nothing written.
    rollout = Rollout.objects.get(slug=MAIN_SLUG)
    writes = AuditEvent.objects.exclude(action__regex=r"^(audit|auth)\.")
    before = (writes.count(), request.status, AuditEvent.objects.filter(action="auth.permission_denied").count())
    token = page.locator("#audit-export input[name=csrfmiddlewaretoken]").get_attribute("value")
    for path, body in (
        (f"{MAIN}kill-switch/", {"on": "on", "reason": "forged"}),
        (f"{request.get_absolute_url()}decide/", {"decision-support-lead": "approve", "comment": "forged"}),
        (f"{MAIN}rollback/", {"reason": "forged"}),
        ("/compliance/retention/", {"rollout": rollout.slug, "reason": "forged"}),
    ):
        status = page.evaluate(
            """async ([path, body, token]) => (await fetch(path, {method: "POST", headers: {"X-CSRFToken": token},
                 body: new URLSearchParams(body), redirect: "manual"})).status""",
            [path, body, token],
        )
        assert status == 403, path
    request.refresh_from_db()
    assert (writes.count(), request.status) == before[:2]
    # ... and each refusal is itself on the record.
    assert AuditEvent.objects.filter(action="auth.permission_denied").count() > before[2]
    assert not FlagExposure.objects.filter(flag__rollout=rollout, flag__key="agent_v1_fallback", enabled=True).exists()
