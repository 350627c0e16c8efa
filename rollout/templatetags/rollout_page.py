"""The rollout page's row-heavy panels drawn in one pass: the checklists, the flag matrix, the recent history.

A template loop cost a variable lookup, an include or a filter call per cell, a good share of the page's CPU
(issue 10). Each tag gives the markup of the loop it replaced, which ``tests/rollout/test_page_rows.py`` renders
from the old template kept as ``tests/rollout/rollout_rows_reference.html`` against these.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

from django import template
from django.template.base import render_value_in_context
from django.template.defaulttags import CsrfTokenNode
from django.urls import reverse
from django.utils.html import conditional_escape, escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from rollout import timefmt
from rollout.tables import shown_number

register = template.Library()

_CSRF = CsrfTokenNode()
_DONE = '<span class="badge text-bg-success">done</span>'
_OPEN = '<span class="badge text-bg-secondary">open</span>'


def _text(value: Any, context) -> str:
    """``{{ value }}``: plain strings escaped directly, anything else through the template's own rendering."""
    if type(value) is str:
        return escape(value)
    return render_value_in_context(value, context)


def _has_perm(context, app_label: str, codename: str) -> bool:
    """``perms.<app>.<codename>`` as the template reads it (False where the context has no ``perms``)."""
    perms = context.get("perms")
    return bool(perms and perms[app_label][codename])


def _truncated(value: Any, length: int) -> str:
    """``|truncatechars:length``; text that fits comes back NFC-normalised and unchanged, as Django gives it."""
    text = str(value)
    if len(text) <= length:
        return unicodedata.normalize("NFC", text)
    return Truncator(text).chars(length)


@register.simple_tag(takes_context=True)
def checklist_rows(context, items: Iterable, rollout) -> SafeString:
    """The body rows of a checklist (``rollout/_checklist.html``'s loop)."""
    may_change = _has_perm(context, "rollout", "change_checklistitem")
    closed = rollout.is_closed if may_change else False
    html: list[str] = []
    for item in items:
        done = item.completed_at is not None  # ChecklistItem.is_done
        title = _text(item.title, context)
        html.append(
            f'<tr data-item="{_text(item.key, context)}"><td>{title}</td><td>'
            + (_DONE if done else _OPEN)
            + "</td><td>"
        )
        if item.evidence_url and done:
            html.append(f'<a href="{_text(item.evidence_url, context)}" rel="noopener noreferrer">evidence</a>')
        else:
            html.append('<span class="text-muted">—</span>')
        html.append('</td><td class="small text-nowrap">')
        if done:
            user = item.completed_by
            name = (user.get_username() if user is not None else "") or "(deleted user)"
            when = conditional_escape(timefmt.render_time(item.completed_at, "m-d H:i"))
            html.append(f'{_text(name, context)} <span class="text-muted">{when}</span>')
        html.append("</td>")
        if may_change:
            html.append("<td>")
            if done:
                url = reverse("rollout:checklist_untick", args=[rollout.slug, item.pk])
                html.append(f'<a class="btn btn-sm btn-link py-0" href="{escape(url)}">Reopen…</a>')
            elif not closed:
                url = reverse("rollout:checklist_tick", args=[rollout.slug, item.pk])
                pk = _text(item.pk, context)
                html.append(
                    f'<form method="post" action="{escape(url)}" class="d-flex gap-1">{_CSRF.render(context)}'
                    f'<label class="visually-hidden" for="ev-{pk}">Evidence link for {title}</label>'
                    f'<input id="ev-{pk}" type="url" name="evidence_url" placeholder="https://… evidence" required'
                    ' class="form-control-sm"><button class="btn btn-sm btn-success" type="submit"'
                    ' data-action="tick">Tick</button></form>'
                )
            html.append("</td>")
        html.append("</tr>")
    return mark_safe("".join(html))  # noqa: S308 - every value escaped


@register.simple_tag(takes_context=True)
def flag_rows(context, rows: Iterable) -> SafeString:
    """The flag matrix's body rows: per flag, tenants with it on / tenants in each cohort."""
    html: list[str] = []
    for row in rows:
        key = _text(row.flag.key, context)
        kill = row.is_kill_switch
        html.append(
            ('<tr class="table-warning">' if kill else "<tr>")
            + f'<th scope="row"><code>{key}</code>'
            + (' <span class="badge text-bg-warning">kill switch</span></th>' if kill else "</th>")
        )
        for cohort, on, members in row.cells:
            shown = f"<strong>{escape(shown_number(on))}</strong>" if on else "0"
            html.append(
                f'<td data-flag="{key}" data-cohort="{_text(cohort.kind, context)}">{shown}/'
                f"{escape(shown_number(members))}</td>"
            )
        html.append("</tr>")
    return mark_safe("".join(html))  # noqa: S308 - every value escaped


@register.simple_tag(takes_context=True)
def history_entries(context, entries: Iterable[dict[str, Any]]) -> SafeString:
    """The recent history's list items (``rollout.selectors.rollout_history``'s dicts)."""
    html: list[str] = []
    for e in entries:
        at = conditional_escape(timefmt.render_time(e["at"], "Y-m-d H:i"))
        reason = e["reason"]
        html.append(
            f'<li class="mb-1"><span class="text-muted">{at}</span> · {_text(e["user"], context)}'
            f" {_text(e['type'], context)} {escape(str(e['model']).lower())} <em>{_text(e['object'], context)}</em>"
            + (f" — {escape(_truncated(reason, 80))}" if reason else "")
            + "</li>"
        )
    return mark_safe("".join(html))  # noqa: S308 - every value escaped
