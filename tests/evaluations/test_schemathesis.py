"""Issue 8, finding 10: the published OpenAPI schema and the API agree, as schemathesis checks them.

Schemathesis (the real tool, its CLI) reads ``/api/v1/schema/`` from a live
server with a token of both scopes and runs every check it has (status codes,
content types, response schemas, positive data accepted, negative data
refused, missing auth, unsupported methods, ...) over every operation, in its
coverage, fuzzing and stateful phases, with a bounded number of examples and
a fixed seed. Zero failures is the bar. The hooks
(``schemathesis_hooks.py``) state the cross-field rules JSON Schema cannot.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from evaluations.services import ingest_runs, ingest_samples
from rollout.roles import Role
from tests.evaluations.conftest import run
from tests.evaluations.import_tools import PROMPTFOO_DIR, finish, inspect_eval, promptfoo_eval
from tests.evaluations.test_api_ingest import sample
from tests.factories import advance_to, complete_readiness

MAX_EXAMPLES = 25
SEED = 20261201
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


def figures(output: str) -> dict[str, int]:
    tested = re.search(r"Tested:\s+(\d+)", output)
    cases = re.search(r"(\d+) generated, (\d+) (?:passed|found)", output)
    failures = re.search(r"(\d+) failures?", output.split("SUMMARY")[-1])
    return {
        "operations": int(tested.group(1)) if tested else -1,
        "requests": int(cases.group(1)) if cases else -1,
        "failures": int(failures.group(1)) if failures else 0,
    }


@pytest.mark.processes
def test_schemathesis_all_checks_find_no_failure(live_server, users, tenants, rollout, token, tmp_path):
    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    entered = timezone.now() - dt.timedelta(days=1)
    advance_to(rollout, "canary", admin, at=entered)
    # The import endpoints' positive cases post files the real tools write now, inside the canary's activity.
    inspect_log = finish(inspect_eval(tmp_path / "inspect", "-T", "arm=candidate"), tmp_path / "inspect", "inspect")
    # promptfoo's providers labelled by arm, so that the import needs no mapping.
    suite = (PROMPTFOO_DIR / "promptfooconfig.yaml").read_text()
    suite = suite.replace("label: legacy", "label: baseline").replace(
        "file://provider.js", f"file://{PROMPTFOO_DIR}/provider.js"
    )
    (tmp_path / "suite.yaml").write_text(suite)
    promptfoo_results = promptfoo_eval(tmp_path / "promptfoo-results.json", config=tmp_path / "suite.yaml")
    ingest_runs(payload={"runs": [run(rollout.slug, run_id="st-known-run")]})
    start = timezone.now() - dt.timedelta(hours=1)
    ingest_samples(payload={"samples": [sample(rollout.slug, start)]})
    raw = token("ingest", "read")
    config = tmp_path / "schemathesis.toml"
    # No NUL in generated strings: the API refuses them everywhere (422, tests/evaluations/test_api_boundary.py),
    # which the schema says in words; JSON Schema cannot say it of free-form output objects.
    config.write_text(
        f'[generation]\nallow-x00 = false\n\n[parameters]\nslug = "{rollout.slug}"\nrun_id = "st-known-run"\n'
        # The import endpoints' query: the canary of this rollout and a cohort it exposes, no mapping.
        f'rollout = "{rollout.slug}"\nphase = "canary"\narm = "candidate"\ncohort = "internal"\nmapping = "{{}}"\n'
    )
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "RGD_SCHEMATHESIS_ROLLOUT": rollout.slug,
        "RGD_SCHEMATHESIS_INSPECT_LOG": str(inspect_log),
        "RGD_SCHEMATHESIS_PROMPTFOO": str(promptfoo_results),
        "RGD_SCHEMATHESIS_SINCE": entered.isoformat(),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(config),
            "run",
            f"{live_server.url}/api/v1/schema/",
            "--header",
            f"Authorization: Bearer {raw}",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # its cache (.schemathesis/) stays out of the checkout
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    found = figures(output)
    print(f"schemathesis: {found}")  # the figures, for the report (pytest -s)
    # The failures section first (a binary body in the curl line can fill the tail), then the summary.
    failures = output.partition("FAILURES")[2].partition("SUMMARY")[0][:3000]
    assert result.returncode == 0, failures + output[-3000:]
    assert found["failures"] == 0, failures + output[-3000:]
    assert found["operations"] == 9, output[-3000:]
    assert found["requests"] >= 300, output[-3000:]
