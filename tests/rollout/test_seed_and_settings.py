"""Demo data idempotency, and production settings that refuse to start half-configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command

from rollout.models import PhaseKind, PhaseStatus, Rollout
from rollout.roles import Role

ROOT = Path(__file__).resolve().parents[2]


def _row_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def test_seed_demo_is_idempotent(role_groups, capsys):
    call_command("seed_demo")
    first = _row_counts()
    out = capsys.readouterr().out
    assert "Demo data loaded" in out
    for role in Role:
        assert f"  {role.value:<22} demo" in out
    call_command("seed_demo")
    assert _row_counts() == first
    assert "nothing changed" in capsys.readouterr().out

    users = {u.username: u for u in get_user_model().objects.prefetch_related("groups")}
    for role in Role:
        assert [g.name for g in users[role.value].groups.all()] == [role.value]
        assert users[role.value].check_password("demo")
    main = Rollout.objects.get(slug="react-multi-agent")
    assert main.phases.get(kind=PhaseKind.CANARY).status == PhaseStatus.ACTIVE
    assert main.checklist_items.filter(kind="readiness", completed_at__isnull=True).count() == 0
    second = Rollout.objects.get(slug="voice-insights-expansion")
    assert second.phases.get(kind=PhaseKind.PREPARATION).status == PhaseStatus.ACTIVE


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ENV", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    clean.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


PROD = {"DJANGO_ENV": "production", "DATABASE_URL": "sqlite:////tmp/rgd-deploy-check.sqlite3"}


def test_production_settings_pass_check_deploy_without_warnings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY="x" * 24 + "-a-long-random-production-secret-key-value",
        ALLOWED_HOSTS="rollouts.example.com",
        **PROD,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("env", "missing"),
    [({"ALLOWED_HOSTS": "rollouts.example.com"}, "SECRET_KEY"), ({"SECRET_KEY": "s" * 60}, "ALLOWED_HOSTS")],
)
def test_production_refuses_to_start_without_secret_key_or_hosts(env, missing):
    result = _manage("check", **env, **PROD)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and missing in result.stderr
