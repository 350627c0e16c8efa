"""Schemathesis hooks for the API suite: the documented rules JSON Schema cannot state.

A schema can say a field is a date-time; it cannot say "finished_at is not
before started_at", "not in the future", "compensations at most conversations"
or "interval_end after interval_start". The API documents these in the
operation descriptions and answers 422 for them. For positive cases only,
these hooks move generated values into those rules, so that the
``positive_data_acceptance`` check judges what the schema can promise;
negative cases are left untouched. The rollout named in positive bodies is
the suite's real rollout half of the time, so ingestion is exercised past the
lookup (an unknown rollout is a documented 404). Items for that rollout are
made to fit its active phase: the canary, entered at ``RGD_SCHEMATHESIS_SINCE``,
with the end time inside that activity period and the cohort one the canary
exposes (a run or interval outside its phase's period is a documented 422).

The import endpoints take a file a tool wrote: no schema can describe a valid Inspect log or promptfoo
results file, so every generated body would be a (documented) 422. For positive cases the hooks send a real
file instead, made by the tool in the test (``RGD_SCHEMATHESIS_INSPECT_LOG``, ``RGD_SCHEMATHESIS_PROMPTFOO``),
so ``positive_data_acceptance`` sees it imported (201, then duplicates); the parameters it needs are pinned in
the test's config, and negative cases stay generated.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import schemathesis

ROLLOUT = os.environ.get("RGD_SCHEMATHESIS_ROLLOUT", "")
# An Inspect .eval log is a zip: sent as the bytes it is, like application/octet-stream.
schemathesis.serializer.alias("application/zip", "application/octet-stream")

INSPECT_LOG = os.environ.get("RGD_SCHEMATHESIS_INSPECT_LOG", "")
PROMPTFOO_RESULTS = os.environ.get("RGD_SCHEMATHESIS_PROMPTFOO", "")
# When the suite's rollout entered canary (its active phase): runs and intervals of it end after this.
SINCE = os.environ.get("RGD_SCHEMATHESIS_SINCE", "")
PHASE = "canary"
EXPOSED_COHORTS = (None, "internal")
_EARLY = "2026-01-01T00:00:00+00:00"


def _moment(value) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("z", "Z"))
        return moment.astimezone(dt.UTC) if moment.tzinfo else None
    except (ValueError, OverflowError):
        return None


def _fix_pair(item: dict, start_key: str, end_key: str) -> None:
    now = dt.datetime.now(dt.UTC)
    start, end = _moment(item.get(start_key)), _moment(item.get(end_key))
    lowest = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
    if start is None or end is None or not (lowest <= start < end <= now):
        item[start_key], item[end_key] = _EARLY, (now - dt.timedelta(seconds=30)).isoformat()


def _fit_phase(item: dict, start_key: str, end_key: str) -> None:
    """For the suite's rollout: its active phase, and an end inside that phase's activity period."""
    if not ROLLOUT or item.get("rollout") != ROLLOUT:
        return
    item["phase"] = PHASE
    since = _moment(SINCE)
    end = _moment(item.get(end_key))
    if since is not None and (end is None or end < since):
        now = dt.datetime.now(dt.UTC)
        item[start_key], item[end_key] = _EARLY, max(now - dt.timedelta(seconds=30), since).isoformat()


def _fix_run(item: dict, index: int) -> None:
    if ROLLOUT and index % 2 == 0:
        item["rollout"] = ROLLOUT
    _fix_pair(item, "started_at", "finished_at")
    _fit_phase(item, "started_at", "finished_at")
    if item.get("rollout") == ROLLOUT and item.get("cohort") not in EXPOSED_COHORTS:
        item["cohort"] = "internal"
    conversations = item.get("conversations")
    if isinstance(conversations, int) and isinstance(item.get("guardrail_compensations"), int):
        item["guardrail_compensations"] = min(item["guardrail_compensations"], conversations)
    outputs = item.get("outputs")
    if isinstance(outputs, list):
        # conversation_id is unique within a run (documented); make generated ones so.
        for n, output in enumerate(outputs):
            if isinstance(output, dict):
                output["conversation_id"] = f"{str(output.get('conversation_id', 'c'))[:180]}-{n}"


def _fix_sample(item: dict, index: int) -> None:
    if ROLLOUT and index % 2 == 0:
        item["rollout"] = ROLLOUT
    _fix_pair(item, "interval_start", "interval_end")
    _fit_phase(item, "interval_start", "interval_end")


def _real_file(case) -> bool:
    """For a positive case of an import endpoint: a real file as the body. (Its parameters are pinned by the
    test's schemathesis config: the canary of the suite's rollout, the internal cohort, an empty mapping.)"""
    if case.path.endswith("/imports/inspect/") and INSPECT_LOG:
        with open(INSPECT_LOG, "rb") as handle:
            case.body = handle.read()
        case.media_type = "application/zip"
        return True
    if case.path.endswith("/imports/promptfoo/") and PROMPTFOO_RESULTS:
        with open(PROMPTFOO_RESULTS, encoding="utf-8") as handle:
            case.body = json.load(handle)
        case.media_type = "application/json"
        return True
    return False


def _is_real_file(case) -> bool:
    if case.path.endswith("/imports/inspect/") and INSPECT_LOG and isinstance(case.body, bytes):
        with open(INSPECT_LOG, "rb") as handle:
            return case.body == handle.read()
    if case.path.endswith("/imports/promptfoo/") and PROMPTFOO_RESULTS and isinstance(case.body, dict):
        with open(PROMPTFOO_RESULTS, encoding="utf-8") as handle:
            return case.body == json.load(handle)
    return False


@schemathesis.hook
def map_case(ctx, case):
    meta = case.meta
    if meta is None:
        return case
    if meta.generation.mode.is_negative:
        return case
    # A coverage case can be positive overall with one negative component: leave those as generated.
    wholly_positive = not any(info.mode.is_negative for info in meta.components.values())
    if (wholly_positive and _real_file(case)) or not isinstance(case.body, dict):
        return case
    for key, fix in (("runs", _fix_run), ("samples", _fix_sample)):
        items = case.body.get(key)
        if isinstance(items, list):
            for index, item in enumerate(items):
                if isinstance(item, dict):
                    fix(item, index)
            if key == "runs":
                # run_id is unique within a request with other content (documented 409); keep them distinct.
                for index, item in enumerate(items):
                    if isinstance(item, dict) and isinstance(item.get("run_id"), str):
                        item["run_id"] = f"{item['run_id'][:190]}.{index}"
    return case


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """The coverage phase derives negative cases (a bad query value) from positive ones after ``map_case``, the
    real file included; with the pinned parameters some "bad" values are sent valid, and the file is rightly
    imported (ST201). A negative case of an import endpoint is sent with a body that is no such file instead."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative and _is_real_file(case):
        case.body = b"not a log" if isinstance(case.body, bytes) else {"not": "a results file"}
