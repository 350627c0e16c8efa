"""A governed write (P11): one approval through ``governance.services.transition_decide`` (row locks, the rules, the
approval, its historical record and its ledger entry, one transaction), against the same model's plain ``save()``
(one INSERT in a transaction, no history and so no ledger entry), alternated in the same run.

The ledger is seeded to 1M entries (x --scale) first, so the ledger append works at a year's size. Both sides
write into one open transition request to canary (product and SRE leads approve it): the product lead decides,
and between two decisions the approval is voided with an UPDATE outside the clock, so the next decision is again
the request's first (the request never closes). Each figure is the mean time per write over ``WRITES`` writes.
"""

from __future__ import annotations

import time

from django.db import connection, transaction

from .rows import Row, alternate, row

WRITES = 50


def setup():
    """A fresh rollout with an open request to canary; returns (request, the deciding product lead)."""
    from django.contrib.auth import get_user_model

    from governance import services
    from rollout.roles import Role
    from rollout.services import rollout_create_from_playbook

    users = get_user_model().objects
    admin = users.get(username=str(Role.ROLLOUT_ADMIN))
    rollout = rollout_create_from_playbook(name=f"Governed write bench {time.time_ns()}", owner=admin)
    request = services.transition_request_create(
        rollout=rollout, justification="Bench: readiness evidence attached.", actor=admin
    )
    return request, users.get(username=str(Role.PRODUCT_LEAD))


def _void(approval) -> None:
    from django.utils import timezone

    from governance.models import TransitionApproval

    TransitionApproval.objects.filter(pk=approval.pk).update(voided_at=timezone.now(), void_reason="bench")


def governed(request, lead, writes: int) -> float:
    """Mean milliseconds of ``transition_decide`` (approve, as the product lead)."""
    from governance import services
    from governance.models import Decision
    from rollout.roles import Role

    total = 0.0
    for _ in range(writes):
        started = time.perf_counter()
        approval = services.transition_decide(
            request=request, role=Role.PRODUCT_LEAD, decision=Decision.APPROVE, comment="Looks right.", actor=lead
        )
        total += time.perf_counter() - started
        _void(approval)
    return 1000 * total / writes


def plain(request, lead, writes: int) -> float:
    """Mean milliseconds of the same approval row's ``save()`` with no history (hence no ledger entry)."""
    from django.utils import timezone

    from governance.models import Decision, TransitionApproval
    from rollout.roles import Role

    total = 0.0
    for _ in range(writes):
        started = time.perf_counter()
        with transaction.atomic():
            approval = TransitionApproval(
                request=request,
                role=Role.PRODUCT_LEAD,
                decision=Decision.APPROVE,
                comment="Looks right.",
                approver=lead,
                approver_name=lead.get_username(),
                requester_id=request.requested_by_id,
                decided_at=timezone.now(),
            )
            approval.skip_history_when_saving = True  # django-simple-history: no historical record
            approval.save()
        total += time.perf_counter() - started
        _void(approval)
    return 1000 * total / writes


def run(args) -> dict:
    from governance.benchdata import seed_bench
    from governance.models import AuditEvent, TransitionApproval

    seeded = seed_bench(runs=0, ledger_entries=max(1000, int(1_000_000 * args.scale)), outputs=0)
    request, lead = setup()
    writes = max(5, min(WRITES, int(WRITES * args.scale * 100)))
    entries_before = AuditEvent.objects.count()
    governed(request, lead, 3)  # warm up both paths (imports, prepared plans)
    plain(request, lead, 3)
    measured, references = alternate(
        args.repeats, lambda: governed(request, lead, writes), lambda: plain(request, lead, writes)
    )
    # What the governed side wrote: one ledger entry and one historical record per decision, none for the plain.
    ledger_entries = AuditEvent.objects.count() - entries_before
    history = TransitionApproval.history.filter(request_id=request.pk, history_type="+").count()
    assert ledger_entries == history == writes * args.repeats + 3, (ledger_entries, history)
    rows: list[Row] = [
        row(
            "P11",
            "governed write (approval with history and ledger entry)",
            measured,
            references,
            unit="ms",
            target="<= 2.5x",
            reference_what="the same model's plain save()",
            check=lambda _f, _r, ratio: ratio is not None and ratio <= 2.5,
        )
    ]
    return {
        "database": connection.vendor,
        "ledger_entries": seeded.ledger,
        "writes_per_sample": writes,
        "rows": [r.as_dict() for r in rows],
    }
