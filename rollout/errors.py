"""Named domain errors.

Services raise these; views turn them into a message, the API into an
``application/problem+json`` body. Every subclass carries a stable ``code``
(used as the problem type) and the HTTP status the API answers with.
"""

from .context import note_refusal


class DomainError(Exception):
    code = "domain-error"
    status = 400
    title = "The request could not be carried out"
    # A refusal of the actor (a rule says they may not), not of the input: the audit ledger records it as a
    # denied action. None means "every 403 is one"; a subclass may say otherwise.
    refusal: bool | None = None

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if self.is_refusal:
            note_refusal(self)

    @property
    def is_refusal(self) -> bool:
        return self.status == 403 if self.refusal is None else self.refusal


class ActionNotAllowed(DomainError):
    code = "action-not-allowed"
    status = 403
    title = "Your roles do not allow this action"


class InvalidTransition(DomainError):
    code = "invalid-transition"
    status = 409
    title = "This state change is not allowed"


class VoiceIngestionNotConfirmed(DomainError):
    code = "voice-ingestion-not-confirmed"
    status = 422
    title = "Voice insights need confirmed transcript ingestion"


class ChecklistItemStateError(DomainError):
    code = "checklist-item-state"
    status = 409
    title = "The checklist item is not in the expected state"


class CohortOverlap(DomainError):
    code = "cohort-overlap"
    status = 422
    title = "A tenant can belong to one cohort of a rollout only"


class IncidentStateError(DomainError):
    code = "incident-state"
    status = 409
    title = "The incident is not in the expected state"


class InvalidPlan(DomainError):
    code = "invalid-plan"
    status = 422
    title = "The plan is not valid"
