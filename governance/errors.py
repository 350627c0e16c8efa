"""Named errors of plan sign-offs, transition approvals and the audit ledger.

Each rule of issue 3 has its own class so the views say exactly what was refused
and the tests can tell the rules apart.
"""

from rollout.errors import DomainError


class NotInRole(DomainError):
    code = "not-in-role"
    status = 403
    title = "Only a member of the role's group decides for it"


class SelfApprovalForbidden(DomainError):
    code = "self-approval-forbidden"
    status = 403
    title = "The requester never approves their own request"


class RoleAlreadyDecided(DomainError):
    code = "role-already-decided"
    status = 409
    title = "This role has already decided"


class OneRolePerPerson(DomainError):
    code = "one-role-per-person"
    status = 409
    title = "One person fills at most one role"
    refusal = True  # segregation of duties: the person is refused, not the input


class RoleNotRequired(DomainError):
    code = "role-not-required"
    status = 422
    title = "This role does not approve this transition"


class CommentRequired(DomainError):
    code = "comment-required"
    status = 422
    title = "A comment is required"


class RequestAlreadyOpen(DomainError):
    code = "request-already-open"
    status = 409
    title = "This rollout already has an open transition request"


class RequestClosed(DomainError):
    code = "request-closed"
    status = 409
    title = "The transition request is closed"


class RequestNotApproved(DomainError):
    code = "request-not-approved"
    status = 409
    title = "The transition request is not approved by every required role"


class AlreadyApplied(DomainError):
    code = "already-applied"
    status = 409
    title = "The transition request was already applied"


class GateNotMet(DomainError):
    code = "gate-not-met"
    status = 409
    title = "An automated gate does not pass"

    def __init__(self, message: str, *, gates=(), field: str | None = None):
        super().__init__(message, field=field)
        self.gates = tuple(gates)


class RolloutClosed(DomainError):
    code = "rollout-closed"
    status = 409
    title = "The rollout is completed or cancelled"


class InvalidApprovers(DomainError):
    code = "invalid-approvers"
    status = 422
    title = "The approving roles are not valid"


class InvalidAuditFilter(DomainError):
    code = "invalid-audit-filter"
    status = 400
    title = "The audit filter is not valid"


class InvalidDecision(DomainError):
    code = "invalid-decision"
    status = 422
    title = "A decision is approve or reject"


class StaleVersion(DomainError):
    """The form showed a version (plan hash, request state) that has changed since: nothing is recorded."""

    code = "stale-version"
    status = 409
    title = "What you decided on has changed since you loaded it"

    def __init__(self, message: str, *, seen: str, current: str, field: str | None = "version"):
        super().__init__(message, field=field)
        self.seen, self.current = seen, current
