"""The playbook template a rollout is created from (design section 3, playbook 1-7)."""

from __future__ import annotations

from .models import CohortKind, FlagKey, PhaseKind, Severity

# (key, title): design section 3's readiness checklist.
READINESS_ITEMS: tuple[tuple[str, str], ...] = (
    ("migrations-skill-workflows", "Database migrations applied: skill workflows"),
    ("migrations-conversation-reflections", "Database migrations applied: conversation reflections"),
    ("migrations-telemetry-tables", "Database migrations applied: telemetry tables"),
    ("flag-react-loop", "Feature flag exists in the configuration service: ReAct loop"),
    ("flag-multi-agent-runner", "Feature flag exists in the configuration service: multi-agent runner"),
    ("flag-critic-revision", "Feature flag exists in the configuration service: critic revision"),
    ("flag-voice-insights", "Feature flag exists in the configuration service: voice insights"),
    (
        "runbooks-published",
        "Operator runbooks published (planner overrides, guardrail compensations, telemetry dashboards)",
    ),
    ("dashboards-published", "Telemetry dashboards published"),
    ("alert-routing-latency", "Alert routing confirmed: latency"),
    ("alert-routing-cost", "Alert routing confirmed: cost"),
    ("alert-routing-guardrail", "Alert routing confirmed: guardrail failures"),
)

# Playbook section 7.
EXIT_ITEMS: tuple[tuple[str, str], ...] = (
    (
        "all-tenants-on-new-stack",
        "All tenants operate on the ReAct + multi-agent stack with guardrail automation enabled",
    ),
    ("support-trained", "Support teams trained on new tooling and incident procedures"),
    (
        "governance-artifacts-stored",
        "Governance artifacts (approvals, retrospectives, audit logs) stored and discoverable",
    ),
    ("continuous-evaluation", "Continuous evaluation pipeline embedded in release management workflows"),
)

FLAG_DESCRIPTIONS: dict[str, str] = {
    FlagKey.REACT_LOOP: "Runs the assistant's ReAct reasoning loop.",
    FlagKey.MULTI_AGENT_RUNNER: "Runs the multi-agent orchestration runner.",
    FlagKey.CRITIC_REVISION: "Lets a critic agent revise answers before they are sent.",
    FlagKey.VOICE_INSIGHTS: "Voice subagent; only for tenants with confirmed transcript ingestion.",
    FlagKey.AGENT_V1_FALLBACK: "Kill switch: serves the legacy single-agent pipeline while on.",
}

COHORT_NAMES: dict[str, str] = {
    CohortKind.INTERNAL: "Internal QA tenants",
    CohortKind.BETA: "Early-access beta customers",
    CohortKind.GENERAL: "All other tenants",
}

# Days after the rollout's start date at which each phase is planned to begin.
PHASE_OFFSETS_DAYS: dict[str, int] = {
    PhaseKind.PREPARATION: 0,
    PhaseKind.CANARY: 14,
    PhaseKind.LIMITED_BETA: 21,
    PhaseKind.GENERAL_AVAILABILITY: 42,
}

# (severity, contact, role, channel)
DEFAULT_ESCALATION_MATRIX: tuple[tuple[str, str, str, str], ...] = (
    (Severity.SEV1, "SRE on-call", "Incident commander", "Pager, then #ai-assistant-triage"),
    (Severity.SEV1, "Product lead", "Decision owner", "Phone"),
    (Severity.SEV2, "SRE on-call", "First responder", "#ai-assistant-triage"),
    (Severity.SEV2, "Support lead", "Customer communication", "Email and #ai-assistant-triage"),
    (Severity.SEV3, "Rollout admin", "Owner", "#ai-assistant-triage"),
)
