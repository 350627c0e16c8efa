"""The machinery of the access matrix (tests/test_access_matrix.py): principals, requests, bodies, row counts.

The table itself stays in the test module so it reads as one page; this module knows how to send one cell.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from governance.models import AuditEvent, DenialWindow
from rollout.roles import LEAD_ROLES, Role

from .matrix_world import World

ROLES = [r.value for r in Role]
# The columns of the two tables, in order. On pages, "token" is a token with both scopes.
PAGE_PRINCIPALS = ["anonymous", *ROLES, "token"]
API_PRINCIPALS = ["anonymous", *ROLES, "token:ingest", "token:read", "token:none", "token:bad"]
# The integrations outside /api/v1/ (issue 12: OFREP, /metrics): tokens of their own scopes.
INTEGRATION_PRINCIPALS = ["anonymous", *ROLES, "token:flags", "token:metrics", "token:read", "token:bad"]

# Expected values that are not a bare status code.
LOGIN = "login"  # 302 to the login page with ?next= (LoginRequiredMiddleware)
ADMIN_LOGIN = "alogin"  # 302 to the admin's login page with ?next=
WRITES = "+"  # suffix: the request writes (some row count changes); without it, no row count may change

# Row counts that a refused request may change, and why.
NOT_COUNTED = {
    AuditEvent: "the audit ledger records every denial (that is the point)",
    DenialWindow: "the ledger's count of repeated denials per source, reason and window",
    Session: "force_login and logins write sessions",
}


@dataclass(frozen=True)
class Cell:
    name: str
    method: str
    principal: str
    expected: str

    @property
    def answer(self) -> str:
        return self.expected.removesuffix(WRITES)

    @property
    def writes(self) -> bool:
        return self.expected.endswith(WRITES)

    def __str__(self) -> str:
        return f"{self.principal} {self.method} {self.name} -> {self.expected}"


def parse(table: str, principals: list[str]) -> list[Cell]:
    """Rows of ``name METHOD value...`` (one value per principal; ``|`` and ``#`` comments are decoration)."""
    cells: list[Cell] = []
    for line in table.strip().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, method, *values = line.replace("|", " ").split()
        if len(values) != len(principals):
            raise ValueError(f"{name} {method}: {len(values)} values for {len(principals)} columns")
        cells += [Cell(name, method, p, v) for p, v in zip(principals, values, strict=True)]
    return cells


# --- Row counts -----------------------------------------------------------------------------------------------


def counted_tables() -> list[str]:
    skip = {m._meta.db_table for m in NOT_COUNTED}
    tables = {
        m._meta.db_table
        for m in apps.get_models(include_auto_created=True)
        if m._meta.managed and not m._meta.proxy and m._meta.db_table not in skip
    }
    return sorted(tables)


def row_counts(tables: list[str]) -> dict[str, int]:
    """Every table's row count in one query (a snapshot per cell must stay cheap)."""
    qn = connection.ops.quote_name
    # Table names come from the models, quoted: no user input reaches this string.
    sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {qn(t)})" for t in tables)  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return dict(zip(tables, cursor.fetchone(), strict=True))


# --- Requests -------------------------------------------------------------------------------------------------


def client_for(principal: str, world: World) -> Client:
    if principal.startswith("token"):
        raw = world.tokens[principal.partition(":")[2] or "both"]
        return Client(raise_request_exception=False, headers={"Authorization": f"Bearer {raw}"})
    client = Client(raise_request_exception=False)
    if principal != "anonymous":
        client.force_login(world.users[principal])
    return client


def _lead_role(principal: str) -> str:
    """The role a principal decides in: their own when they are a lead, else the product lead's (refused)."""
    return principal if principal in {str(r) for r in LEAD_ROLES} else str(Role.PRODUCT_LEAD)


def _plan(world: World) -> dict[str, Any]:
    from rollout.forms import PlanForm

    form = PlanForm(instance=world.rollout, phases=list(world.rollout.phases.all()))
    data = {name: form[name].value() for name in form.fields}
    data = {k: ("" if v is None else v) for k, v in data.items()}
    data.update(latency_sla_ms="1800", reason="SRE asked for a tighter SLA.")
    return data


def _record() -> dict[str, Any]:
    return {
        "key": "support-macros",
        "name": "Support macro suggestions",
        "controller": "Example Ltd",
        "purpose": "Suggest macros to support agents",
        "data_subject_categories": "Customers",
        "personal_data_categories": "Ticket text",
        "recipients": "Support team",
        "transfers": "None",
        "retention_period_days": "90",
        "retention_policy_applies": "on",
        "security_measures": "Encryption at rest",
        "reason": "New processing.",
    }


def _run(world: World) -> dict[str, Any]:
    # Inside the canary's current period: after the world was built, before now.
    now = timezone.now()
    return {
        "run_id": f"matrix-{now.timestamp():.6f}",
        "rollout": world.rollout.slug,
        "phase": "canary",
        "arm": "candidate",
        "started_at": world.built_at.isoformat(),
        "finished_at": (now - dt.timedelta(microseconds=1)).isoformat(),
        "conversations": 100,
        "guardrail_compensations": 2,
        "metrics": {"task_success_rate": 0.9, "latency_p95_ms": 1500.0},
        "harness_version": "h-1",
    }


def _sample(world: World) -> dict[str, Any]:
    return {
        "rollout": world.rollout.slug,
        "phase": "canary",
        "interval_start": world.built_at.isoformat(),
        "interval_end": (timezone.now() - dt.timedelta(microseconds=1)).isoformat(),
        "latency_p95_ms": 1400.0,
        "requests": 500,
    }


def _request_version(world: World) -> str:
    from governance.selectors import transition_detail

    return transition_detail(world.rollout.slug, world.request.pk).version


def post_body(name: str, principal: str, world: World) -> dict[str, Any]:
    """A body that a permitted user would send: the refusal must come from who asks, not from what they send.

    Decision forms carry the version they showed (seams-b's stale-version refusal): the current one here."""
    from governance.selectors import plan_hash

    tenants = list(world.rollout.cohorts.order_by("pk").first().memberships.values_list("tenant_id", flat=True))
    tenant_slug = "matrix-tenant"  # the world has no tenants: an unknown one is answered (off, by default)
    bodies = {
        "login": lambda: {"username": "auditor", "password": "pw"},
        "admin:login": lambda: {"username": "auditor", "password": "pw"},
        "account_login": lambda: {"username": "auditor", "password": "pw"},
        "api:evaluation-runs": lambda: {"runs": [_run(world)]},
        "api:monitoring-samples": lambda: {"samples": [_sample(world)]},
        "ofrep:evaluate-flags": lambda: {"context": {"targetingKey": tenant_slug}},
        "ofrep:evaluate-flag": lambda: {"context": {"targetingKey": tenant_slug}},
        "rollout:create": lambda: {"name": "Agent handoff rollout", "start_date": "2027-01-04"},
        "rollout:preferences": lambda: {"time_zone": "Europe/Berlin"},
        "rollout:plan_edit": lambda: _plan(world),
        "rollout:escalation_edit": lambda: {
            "rows-TOTAL_FORMS": "1",
            "rows-INITIAL_FORMS": "0",
            "rows-MIN_NUM_FORMS": "1",
            "rows-MAX_NUM_FORMS": "1000",
            "rows-0-severity": "sev1",
            "rows-0-contact": "Ana (SRE)",
            "rows-0-role": "Incident commander",
            "rows-0-channel": "Pager",
            "reason": "New on-call rotation.",
        },
        "rollout:cohort_edit": lambda: {"tenants": tenants, "reason": "Same members, confirmed."},
        "rollout:phase": lambda: {"severity": "medium", "text": "Planner loops on refunds.", "link": ""},
        "rollout:checklist_tick": lambda: {"evidence_url": "https://wiki.example.com/exit"},
        "rollout:checklist_untick": lambda: {"reason": "Evidence link is dead."},
        "rollout:kill_switch": lambda: {"on": "1", "reason": "Refund regression."},
        "rollout:rollback": lambda: {"reason": "Refund regression."},
        "rollout:incident_close": lambda: {"retrospective": "Root cause: planner loop.", "confirmed": "yes"},
        "rollout:communication_create": lambda: {
            "kind": "status_update",
            "title": "Canary started",
            "body": "Internal tenants are on the new stack.",
        },
        "rollout:communication_edit": lambda: {"title": "Canary plan", "body": "Internal tenants first."},
        # Confirmed: the second post of the confirmation step (rollout.confirming).
        "rollout:communication_publish": lambda: {"confirmed": "yes"},
        "governance:sign_off": lambda: {
            "role": _lead_role(principal),
            "decision": "reject",
            "comment": "Hold on.",
            "version": plan_hash(world.rollout),
        },
        "governance:approvers": lambda: {
            "roles_canary": ["product-lead", "sre-lead"],
            "roles_limited_beta": [str(r) for r in LEAD_ROLES],
            "roles_general_availability": [str(r) for r in LEAD_ROLES],
            "roles_completed": ["product-lead", "compliance-lead"],
            "reason": "SRE joins every step.",
        },
        "governance:transition_create": lambda: {"justification": "Canary soak done."},
        "governance:transition_decide": lambda: {
            "role": _lead_role(principal),
            "decision": "approve",
            "comment": "",
            "version": _request_version(world),
        },
        "governance:transition_apply": lambda: {"note": "Go.", "version": _request_version(world)},
        "governance:transition_withdraw": lambda: {"reason": "Plan changes first."},
        "governance:audit_export": lambda: {"format": "csv"},
        "governance:retention": lambda: {
            "rollout": world.rollout.slug,
            "reason": "Litigation hold.",
            "confirmed": "yes",
        },
        "governance:hold_release": lambda: {"reason": "Investigation closed."},
        "governance:job_run": lambda: {"reason": "Before the audit."},
        "governance:record_create": _record,
        "governance:record_edit": lambda: {**_record(), "key": world.record.key, "name": world.record.name},
        "governance:change_decide": lambda: {"decision": "confirm", "comment": "Listed in the record."},
        "governance:review": lambda: {"notes": "Drill ran.", "compensations_as_designed": "yes", "confirmed": "yes"},
        "governance:review_reassign": lambda: {"role": "product-lead", "reason": "SRE lead on leave."},
        "evaluations:criteria": lambda: {
            "task_success_rate-enabled": "on",
            "task_success_rate-comparator": "gte",
            "task_success_rate-threshold": "0.85",
            "reason": "Agreed with product.",
        },
    }
    return bodies[name]() if name in bodies else {}


def send(cell: Cell, client: Client, world: World, kwargs: dict[str, Any]):
    url = reverse(cell.name, kwargs=kwargs)
    if cell.method == "GET":
        response = client.get(url)
    elif cell.name.startswith(("api:", "ofrep:")):
        body = json.dumps(post_body(cell.name, cell.principal, world) if cell.method == "POST" else {})
        response = client.generic(cell.method, url, body, content_type="application/json")
    elif cell.method == "POST":
        response = client.post(url, post_body(cell.name, cell.principal, world))
    else:
        response = client.generic(cell.method, url)
    if response.streaming:
        # An export holds a cursor until it is read. (Never response.close(): it fires request_finished,
        # whose handler closes a connection that is inside a transaction.)
        b"".join(response.streaming_content)
    return response


def outcome(response) -> str:
    """What the table would say of a response."""
    if response.status_code == 302:
        location = response["Location"]
        if location.startswith(reverse("login") + "?next="):
            return LOGIN
        if location.startswith(reverse("admin:login") + "?next="):
            return ADMIN_LOGIN
    return str(response.status_code)
