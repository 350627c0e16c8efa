"""Named errors of the evaluations app; the API turns them into ``application/problem+json``."""

from __future__ import annotations

from rollout.errors import DomainError


class ProblemWithFields(DomainError):
    """A domain error carrying ``errors``: one ``{"pointer", "message"}`` per bad field (RFC 6901 pointers)."""

    def __init__(self, message: str, *, errors: list[dict[str, str]] | None = None, field: str | None = None):
        super().__init__(message, field=field)
        self.errors = errors or []


class PayloadInvalid(ProblemWithFields):
    code = "validation-error"
    status = 422
    title = "The payload is not valid"


class RunConflict(ProblemWithFields):
    code = "run-conflict"
    status = 409
    title = "A run_id was already ingested with different content"


class SampleConflict(ProblemWithFields):
    code = "sample-conflict"
    status = 409
    title = "A monitoring interval was already ingested with different values"


class InvalidCriteria(DomainError):
    code = "invalid-criteria"
    status = 422
    title = "The success criteria are not valid"


class TokenInvalid(DomainError):
    code = "invalid-token"
    status = 401
    title = "The API token is missing, unknown, expired or revoked"


class TokenExpired(TokenInvalid):
    code = "token-expired"


class TokenRevoked(TokenInvalid):
    code = "token-revoked"


class InvalidToken(DomainError):
    """Creating or revoking a token with bad input."""

    code = "invalid-token-request"
    status = 422
    title = "The token request is not valid"


class JsonTooDeep(DomainError):
    code = "json-too-deep"
    status = 400
    title = "The JSON nests too deeply"


class ReferenceNotFound(ProblemWithFields):
    """The body names something that does not exist (an unknown rollout)."""

    code = "not-found"
    status = 404
    title = "The body refers to something that does not exist"


class OutsidePhase(ProblemWithFields):
    """A run or sample that does not belong to the phase it names: it ended while the phase was not active
    (``finished_at`` / ``interval_end`` outside every activity period), or it names a cohort the phase does
    not expose."""

    code = "outside-phase"
    status = 422
    title = "The data does not fit the phase it names"


class InvalidParameter(DomainError):
    """A query parameter the API cannot read (``?page=abc``)."""

    code = "invalid-parameter"
    status = 400
    title = "A parameter cannot be read"


class ImportRefused(ProblemWithFields):
    """An Inspect log or promptfoo results file that cannot become runs: not such a file, a log that errored or
    was cancelled, or one lacking what the mapping needs (``errors`` points into the file where it can)."""

    code = "import-refused"
    status = 422
    title = "The file cannot be imported"


class ImporterUnavailable(DomainError):
    """The reader an import needs is not installed (``inspect-ai`` for Inspect logs)."""

    code = "importer-unavailable"
    status = 501
    title = "The reader for this file is not installed"
