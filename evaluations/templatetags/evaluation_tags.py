"""Number formatting for evaluation pages: each metric in its unit."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def metric_value(value, unit: str = "") -> str:
    if value is None or value == "":
        return "—"
    value = float(value)
    if unit == "ms":
        return f"{value:,.1f}"
    if unit == "USD":
        return f"{value:.4f}"
    return f"{value:.4f}"


@register.filter
def signed(value, unit: str = "") -> str:
    if value is None:
        return "—"
    text = metric_value(abs(value), unit)
    return ("+" if value > 0 else "\u2212" if value < 0 else "±") + text


@register.filter
def percent(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.{int(digits)}f}%"
