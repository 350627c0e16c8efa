"""Sortable, searchable list pages: django-tables2 renders them, keyset pages feed them.

Every list page works the same way:

- a ``django_filters.FilterSet`` reads the filters and the text search (``?q=``) from the URL, so a filtered,
  sorted view is a link that can be shared or bookmarked;
- ``sorted_page`` orders the filtered rows by the column named in ``?sort=`` (``name`` ascending, ``-name``
  descending), always with the primary key as the last key so the order is total, and returns one keyset page
  of it (``rollout.pagination``): no ``OFFSET`` and no ``COUNT(*)``, so a page costs the same at a million
  rows as at a thousand. A sort the list does not offer falls back to the list's default;
- a ``KeysetTable`` (django-tables2) renders the page's rows with sortable headers. It never sorts or pages
  the rows itself (its paginator counts and offsets); it only shows which column the rows are ordered by.

Sort keys are columns that are never NULL (a keyset over NULLs would skip rows), and on the lists that grow
without bound (runs, the audit ledger) only columns with an index that leads with them (after the list's
fixed filter, e.g. the rollout).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import django_tables2 as tables
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import formats
from django.utils.safestring import SafeString, mark_safe
from django_tables2.utils import OrderByTuple

from .pagination import BIGINT_MAX, Key, KeysetPage, keyset_page
from .timefmt import render_time

SORT_PARAM = "sort"
SORTED_LABELS = ("First", "Previous", "Next", "Last")


@dataclass(frozen=True)
class Sorting:
    """The sorts a list offers: alias -> key columns (unique together once the primary key is appended)."""

    columns: Mapping[str, Sequence[str]]
    default: str  # an alias, with "-" for descending
    labels: tuple[str, str, str, str] = SORTED_LABELS

    def resolve(self, raw: str | None) -> str:
        raw = (raw or "").strip()
        return raw if raw.lstrip("-") in self.columns and raw.count("-") <= 1 else self.default

    def fields(self, alias: str, pk: str) -> tuple[str, ...]:
        columns = tuple(self.columns[alias.lstrip("-")])
        return columns if columns[-1] == pk else (*columns, pk)


def _model_field(model: type[models.Model], name: str) -> models.Field:
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


def cursor_codec(model: type[models.Model], fields: Sequence[str]):
    """Encode a row's key as JSON; decode it back through the model fields, refusing anything that does not
    parse (the caller treats that as the first page)."""
    model_fields = [_model_field(model, f) for f in fields]

    def encode(key: Key) -> str:
        values = [v.isoformat() if hasattr(v, "isoformat") else v for v in key]
        return json.dumps(values[0] if len(values) == 1 else values, separators=(",", ":"))

    def decode(raw: str) -> Key:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError("not a cursor") from exc
        values = data if isinstance(data, list) else [data]
        if len(values) != len(model_fields):
            raise ValueError("wrong length")
        key = []
        for field, value in zip(model_fields, values, strict=True):
            if isinstance(value, (dict, list)) or value is None:
                raise ValueError("not a key value")
            try:
                parsed = field.to_python(value)
            except ValidationError as exc:
                raise ValueError(str(exc)) from exc
            if isinstance(field, models.DateTimeField) and getattr(parsed, "tzinfo", None) is None:
                raise ValueError("a cursor's time carries its offset")
            if isinstance(parsed, int) and not isinstance(parsed, bool) and not -BIGINT_MAX <= parsed <= BIGINT_MAX:
                raise ValueError("out of range")
            if isinstance(parsed, str) and "\x00" in parsed:
                raise ValueError("NUL")
            key.append(parsed)
        return tuple(key)

    return encode, decode


def sorted_page(
    request: HttpRequest, queryset: QuerySet, sorting: Sorting, *, per_page: int | None = None
) -> tuple[KeysetPage, str]:
    """One keyset page of ``queryset`` in the order ``?sort=`` asks for (or the default), and that order."""
    alias = sorting.resolve(request.GET.get(SORT_PARAM))
    pk = queryset.model._meta.pk.name
    fields = sorting.fields(alias, pk)
    encode, decode = cursor_codec(queryset.model, fields)
    page = keyset_page(
        request,
        queryset,
        fields=fields,
        per_page=per_page or settings.PAGE_SIZE,
        encode=encode,
        decode=decode,
        descending=alias.startswith("-"),
        labels=sorting.labels,
    )
    return page, alias


def list_context(
    request: HttpRequest,
    filterset_class: type,
    queryset: QuerySet,
    sorting: Sorting,
    table_class: type[KeysetTable],
    *,
    each: Sequence[Callable[[Any], None]] = (),
) -> dict[str, Any]:
    """A list page's context: the URL's filters and search (``filterset``), its sort, one keyset ``page`` of the
    rows (``each`` hook called on every row of it) and the ``table`` that renders them."""
    filterset = filterset_class(request.GET or None, queryset=queryset)
    page, sort = sorted_page(request, filterset.qs, sorting)
    for hook in each:
        for row in page.object_list:
            hook(row)
    filtered = any(request.GET.get(name) for name in filterset.form.fields)
    table = table_class(page, sort=sort)
    return {"filterset": filterset, "filtered": filtered, "page": page, "sort": sort, "table": table}


class KeysetTable(tables.Table):
    """A django-tables2 table over one keyset page: shows the order, never re-sorts or paginates the rows."""

    class Meta:
        template_name = "partials/table.html"
        orderable = False
        order_by_field = SORT_PARAM
        attrs = {"class": "table table-sm table-hover align-middle"}

    def __init__(self, page: KeysetPage, *, sort: str, **kwargs: Any):
        super().__init__(list(page.object_list), **kwargs)
        self.keyset_page = page
        # Set without the setter: the rows come sorted from the database (its collation, its NULL order).
        self._order_by = OrderByTuple([sort] if sort.lstrip("-") in self.columns else [])


def shown_number(value: float) -> str:
    """A number as ``{{ value }}`` shows it, for the one-pass renderers: Django's localisation costs a call chain
    per number, and gives ``str()`` unless thousand separators are on, the decimal separator is not a point or
    a float prints with an exponent (which it spells out)."""
    if settings.USE_THOUSAND_SEPARATOR or isinstance(value, bool) or not isinstance(value, int | float):
        return str(formats.localize(value))
    if isinstance(value, float) and ("e" in repr(value) or formats.get_format("DECIMAL_SEPARATOR") != "."):
        return str(formats.localize(value))
    return str(value)


class PrerenderedRowsTable(KeysetTable):
    """A KeysetTable whose body is drawn in one pass by ``cells`` instead of django-tables2's per-cell machinery.

    django-tables2 resolves an accessor, inspects the render method's signature, recomputes the column's
    attributes and (for a ``TemplateColumn``) compiles a template, for every cell: on the runs list that was
    three quarters of the page's time. A subclass keeps its columns (they still draw the header, and the
    django-tables2 path stays available: ``tests`` compare the two) and gives ``cells(record)``, each cell's
    HTML, escaped, exactly as its column renders it. ``rollout/prerendered_table.html`` draws the same table
    as ``partials/table.html``.
    """

    class Meta(KeysetTable.Meta):
        template_name = "rollout/prerendered_table.html"

    def cells(self, record: Any) -> Sequence[str]:
        raise NotImplementedError

    def body_html(self) -> SafeString:
        """The ``<tr>`` rows of the page: django-tables2's markup (``even``/``odd`` row classes, each column's
        ``td`` attributes) without its per-cell cost. The attributes are computed once per column, so they must
        not depend on the record."""
        opens = []
        for column in self.columns:
            merged = {**self.attrs, **column.column.attrs}  # as BoundColumn.attrs merges them
            td = merged.get("td", merged.get("cell", {}))
            if any(callable(v) for v in td.values()) or self.row_attrs:
                raise ImproperlyConfigured(f"{type(self).__name__}: prerendered rows need static attributes")
            opens.append(f"<td {column.attrs['td'].as_html()}>")
        rows = []
        for i, record in enumerate(self.keyset_page.object_list):
            cells = "".join(o + c + "</td>" for o, c in zip(opens, self.cells(record), strict=True))
            rows.append(f'<tr class="{"odd" if i % 2 else "even"}">{cells}</tr>')
        return mark_safe("\n".join(rows))  # noqa: S308 - every cell is escaped by cells()


class TimeColumn(tables.Column):
    """A datetime in the reader's time zone, UTC on hover (the ``when`` filter's markup)."""

    def __init__(self, *args: Any, fmt: str = "Y-m-d H:i", **kwargs: Any):
        self.fmt = fmt
        kwargs.setdefault("attrs", {"td": {"class": "text-nowrap"}})
        super().__init__(*args, **kwargs)

    def render(self, value):
        return render_time(value, self.fmt)


# --- The rollout core's lists ------------------------------------------------------------------------------------

ROLLOUT_SORTING = Sorting(
    columns={"name": ("name",), "status": ("status",), "updated": ("updated_at",), "created": ("created_at",)},
    default="-created",
)


class RolloutTable(KeysetTable):
    name = tables.TemplateColumn(
        template_name="rollout/cells/rollout_name.html", verbose_name="Rollout", orderable=True
    )
    status = tables.TemplateColumn(
        "{% load rollout_tags %}{% badge record.status record.get_status_display %}", orderable=True
    )
    current_phase = tables.Column(accessor="current_phase_label", verbose_name="Current phase")
    readiness = tables.TemplateColumn(template_name="rollout/cells/rollout_readiness.html")
    open_incidents = tables.TemplateColumn(
        '{% if value %}<span class="badge text-bg-danger">{{ value }}</span>'
        '{% else %}<span class="text-muted">0</span>{% endif %}',
        verbose_name="Open incidents",
    )
    owner = tables.Column(accessor="owner__username", verbose_name="Owner")
    updated = TimeColumn(accessor="updated_at", verbose_name="Updated", orderable=True)

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table table-hover align-middle", "id": "rollouts"}


TENANT_SORTING = Sorting(columns={"name": ("name",), "tier": ("tier",), "slug": ("slug",)}, default="name")


class TenantTable(KeysetTable):
    name = tables.Column(verbose_name="Tenant", orderable=True)
    tier = tables.Column(accessor="get_tier_display", verbose_name="Tier", orderable=True)
    transcript = tables.TemplateColumn(
        '{% if record.transcript_ingestion_confirmed %}<span class="badge text-bg-success">confirmed</span>'
        '{% else %}<span class="badge text-bg-secondary">not confirmed</span>{% endif %}',
        verbose_name="Transcript ingestion",
    )
    account_manager = tables.TemplateColumn(
        '{{ record.account_manager|default:"—" }}{% if record.account_manager_email %} '
        '<span class="text-muted small">{{ record.account_manager_email }}</span>{% endif %}',
        verbose_name="Account manager",
    )

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table table-sm", "id": "tenants"}


COMMUNICATION_SORTING = Sorting(
    columns={"title": ("title",), "kind": ("kind",), "created": ("created_at",)}, default="-created"
)


class CommunicationTable(KeysetTable):
    title = tables.TemplateColumn(
        '<a href="{{ record.get_absolute_url }}">{{ record.title }}</a>', verbose_name="Title", orderable=True
    )
    kind = tables.Column(accessor="get_kind_display", verbose_name="Kind", orderable=True)
    author = tables.TemplateColumn('{{ record.author.get_username|default:"system" }}', verbose_name="Author")
    created = TimeColumn(accessor="created_at", verbose_name="Written", orderable=True)
    published = tables.TemplateColumn(
        "{% load rollout_tags %}{% if record.published_at %}{{ record.published_at|when }}"
        '{% else %}<span class="badge text-bg-light">draft</span>{% endif %}',
        verbose_name="Published",
    )

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table table-sm", "id": "communications"}
