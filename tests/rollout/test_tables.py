"""The rollout core's list pages: sortable by each sortable column, searchable, filters kept in the URL,
keyset pages (no OFFSET, no COUNT) at the same query count at two sizes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from rollout import services
from rollout.models import Communication, Rollout, Tenant
from rollout.roles import Role
from rollout.tables import COMMUNICATION_SORTING, ROLLOUT_SORTING, TENANT_SORTING
from tests.factories import tenant
from tests.tables_helpers import expected, queries, sort_links, walk


@pytest.fixture
def small_pages(settings):
    settings.PAGE_SIZE = 3


def _rollouts(users, n: int) -> list[Rollout]:
    admin = users[Role.ROLLOUT_ADMIN]
    names = ["delta", "Alpha", "charlie", "bravo", "echo", "alpha two", "Zulu", "mike"]
    made = [services.rollout_create_from_playbook(name=f"{names[i % len(names)]} {i}", owner=admin) for i in range(n)]
    for r in made[::3]:
        services.rollout_cancel(rollout=r, actor=admin, reason="not this quarter")
    return made


def _comms(rollout: Rollout, users, n: int) -> None:
    for i in range(n):
        services.communication_create(
            rollout=rollout,
            kind="prelaunch" if i % 4 == 0 else "status_update",
            title=f"{'Weekly' if i % 2 else 'Launch'} note {i:02d}",
            body="b",
            actor=users[Role.ROLLOUT_ADMIN],
            publish=bool(i % 3),
        )


@pytest.mark.parametrize("alias", sorted(ROLLOUT_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_rollouts_sort_by_each_column_across_pages(client_for, users, tenants, small_pages, alias, descending):
    _rollouts(users, 8)
    fields = ROLLOUT_SORTING.fields(alias, "id")
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.AUDITOR), "/", {"sort": sort})
    assert got == expected(Rollout.objects.all(), fields, descending)
    assert len(got) == 8 and len(set(got)) == 8


@pytest.mark.parametrize("alias", sorted(TENANT_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_tenants_sort_by_each_column_across_pages(client_for, tenants, users, small_pages, alias, descending):
    for i in range(7):
        tenant(f"Extra {chr(ord('a') + (7 * i) % 11)} {i}", tier=["internal", "beta", "general"][i % 3])
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.AUDITOR), "/tenants/", {"sort": sort})
    assert got == expected(Tenant.objects.all(), TENANT_SORTING.fields(alias, "id"), descending)
    assert len(got) == Tenant.objects.count()


@pytest.mark.parametrize("alias", sorted(COMMUNICATION_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_communications_sort_by_each_column_across_pages(client_for, rollout, users, small_pages, alias, descending):
    _comms(rollout, users, 7)
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.AUDITOR), f"/rollouts/{rollout.slug}/communications/", {"sort": sort})
    assert got == expected(rollout.communications.all(), COMMUNICATION_SORTING.fields(alias, "id"), descending)
    assert len(got) == 7


def test_the_default_order_is_newest_first_and_an_unknown_sort_falls_back_to_it(client_for, users, tenants):
    made = _rollouts(users, 4)
    client = client_for(Role.AUDITOR)
    newest_first = [r.pk for r in reversed(made)]
    assert walk(client, "/") == newest_first
    for bad in ("owner", "--name", "name;drop", "-", ""):
        assert walk(client, "/", {"sort": bad}) == newest_first


def test_sorted_header_says_so_and_its_link_toggles_and_keeps_the_filters(client_for, users, tenants):
    _rollouts(users, 3)
    html = client_for(Role.AUDITOR).get("/", {"sort": "name", "q": "a", "status": "draft"}).content.decode()
    assert 'aria-sort="ascending"' in html and html.count("aria-sort=") == 1
    links = sort_links(html)
    assert set(links) == {"name", "status", "updated"}
    assert parse_qs(urlsplit(links["name"]).query) == {"sort": ["-name"], "q": ["a"], "status": ["draft"]}
    assert parse_qs(urlsplit(links["status"]).query) == {"sort": ["status"], "q": ["a"], "status": ["draft"]}


def test_rollout_search_and_status_filter(client_for, users, tenants):
    made = _rollouts(users, 8)
    client = client_for(Role.AUDITOR)
    alpha = sorted((r for r in made if "alpha" in r.name.lower()), key=lambda r: r.name)
    assert walk(client, "/", {"q": "ALPHA", "sort": "name"}) == [r.pk for r in alpha]
    assert walk(client, "/", {"q": alpha[0].slug}) == [alpha[0].pk]
    html = client.get("/", {"q": "no such thing"}).content.decode()
    assert "No rollouts match these filters." in html
    # A status that does not exist is dropped and named, never a 500.
    bad = client.get("/", {"status": "exploded"})
    assert bad.status_code == 200 and len(bad.context["page"].object_list) == len(made)
    assert "Select a valid choice" in bad.content.decode()
    assert walk(client, "/", {"status": "in_progress"}) == []
    assert walk(client, "/", {"status": "cancelled", "sort": "created"}) == [r.pk for r in made[::3]]
    assert len(walk(client, "/", {"status": "draft"})) == 5


def test_filters_round_trip_through_the_url_and_the_pages(client_for, users, tenants, small_pages):
    _rollouts(users, 11)
    client = client_for(Role.AUDITOR)
    first = client.get("/", {"q": "a", "status": "draft", "sort": "-name"})
    html = first.content.decode()
    # The form shows what the URL says, and carries the sort in force.
    assert 'name="q" value="a"' in html
    assert '<option value="draft" selected>' in html
    assert '<input type="hidden" name="sort" value="-name">' in html
    page = first.context["page"]
    assert page.has_next
    nxt = parse_qs(urlsplit(page.next_url).query)
    assert nxt["q"] == ["a"] and nxt["status"] == ["draft"] and nxt["sort"] == ["-name"] and nxt["after"]
    second = client.get("/", {k: v[0] for k, v in nxt.items()})
    assert second.context["page"].has_previous
    back = parse_qs(urlsplit(second.context["page"].previous_url).query)
    assert back["q"] == ["a"] and back["sort"] == ["-name"]
    assert [r.pk for r in client.get("/", {k: v[0] for k, v in back.items()}).context["page"].object_list] == [
        r.pk for r in page.object_list
    ]


def test_tenant_search_and_filters(client_for, tenants, users):
    tenant("Globex Voice", tier="beta", confirmed=True)
    client = client_for(Role.AUDITOR)
    assert walk(client, "/tenants/", {"q": "globex"}, key=lambda t: t.name) == ["Globex Voice"]
    confirmed = walk(client, "/tenants/", {"transcript_ingestion_confirmed": "true"}, key=lambda t: t.name)
    assert confirmed == list(
        Tenant.objects.filter(transcript_ingestion_confirmed=True).order_by("name").values_list("name", flat=True)
    )
    beta = walk(client, "/tenants/", {"tier": "beta"}, key=lambda t: t.tier)
    assert beta and set(beta) == {"beta"}


def test_communication_search_kind_and_state(client_for, rollout, users):
    _comms(rollout, users, 6)
    client = client_for(Role.AUDITOR)
    url = f"/rollouts/{rollout.slug}/communications/"
    weekly = walk(client, url, {"q": "weekly", "sort": "title"}, key=lambda c: c.title)
    assert weekly == ["Weekly note 01", "Weekly note 03", "Weekly note 05"]
    drafts = walk(client, url, {"state": "draft"})
    unpublished = Communication.objects.filter(published_at__isnull=True).order_by("-created_at", "-id")
    assert drafts == list(unpublished.values_list("pk", flat=True))


@pytest.mark.parametrize(
    "url, params",
    [
        ("/", {}),
        ("/", {"sort": "name", "q": "o", "status": "draft"}),
        ("/tenants/", {"sort": "-tier", "q": "e"}),
        ("communications", {"sort": "title", "q": "note", "state": "published"}),
    ],
)
def test_list_pages_cost_the_same_queries_at_two_sizes(client_for, users, tenants, small_pages, url, params):
    client = client_for(Role.ROLLOUT_ADMIN)
    main = services.rollout_create_from_playbook(name="Main rollout", owner=users[Role.ROLLOUT_ADMIN])
    path = f"/rollouts/{main.slug}/communications/" if url == "communications" else url
    _rollouts(users, 2)
    _comms(main, users, 2)
    small = queries(client, path, params)
    _rollouts(users, 12)
    _comms(main, users, 14)
    for i in range(12):
        tenant(f"More {i}")
    assert queries(client, path, params) == small
    # A middle page costs the same as the first.
    first = client.get(path, params).context["page"]
    if first.has_next:
        assert queries(client, path, {**params, "after": first.next_cursor}) == small
