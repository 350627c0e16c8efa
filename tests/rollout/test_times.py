"""Times in the reader's zone (preference, else browser, else UTC), UTC on hover, human durations."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from django.template import Context, Template
from django.utils import timezone

from rollout import preferences, services
from rollout.models import Rollout, UserPreference
from rollout.roles import Role
from rollout.timefmt import human_duration, render_time

AT = dt.datetime(2026, 12, 3, 8, 32, 5, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize("fmt", ["Y-m-d H:i", "Y-m-d H:i:s", "Y-m-d", "Y-m-d H:i T", "N j, Y"])
def test_the_quick_formats_give_exactly_what_djangos_formatter_gives(fmt):
    from django.utils.dateformat import format as date_format

    from rollout.timefmt import format_time

    zones = [dt.UTC, zoneinfo.ZoneInfo("Europe/Berlin"), zoneinfo.ZoneInfo("Asia/Kolkata")]
    moments = [
        dt.datetime(year, month, day, hour, minute, second, tzinfo=zone)
        for year in (1, 999, 2026, 9999)
        for month, day in ((1, 1), (2, 28), (12, 31))
        for hour, minute, second in ((0, 0, 0), (9, 5, 7), (23, 59, 59))
        for zone in zones
    ]
    for moment in moments:
        assert format_time(moment, fmt) == date_format(moment, fmt)
        if "H" not in fmt and "T" not in fmt:
            assert format_time(moment.date(), fmt) == date_format(moment.date(), fmt)


def test_a_badge_is_the_markup_its_inclusion_template_made():
    html = Template('{% load rollout_tags %}{% badge s %}|{% badge s "On <hold>" %}|{% badge v %}').render(
        Context({"s": "in_progress", "v": '"><script>'})
    )
    assert html == (
        '<span class="badge text-bg-primary" data-state="in_progress">in progress</span>\n|'
        '<span class="badge text-bg-primary" data-state="in_progress">On <hold></span>\n|'
        '<span class="badge text-bg-secondary" data-state="&quot;&gt;&lt;script&gt;">&quot;&gt;&lt;script&gt;</span>\n'
    )


def test_when_renders_a_time_element_in_the_active_zone_with_utc_on_hover():
    with timezone.override(zoneinfo.ZoneInfo("Europe/Berlin")):
        assert str(render_time(AT)) == (
            '<time datetime="2026-12-03T08:32:05Z" title="2026-12-03 08:32:05 UTC">2026-12-03 09:32</time>'
        )
    with timezone.override(zoneinfo.ZoneInfo("America/Los_Angeles")):
        html = Template('{% load rollout_tags %}{{ t|when:"Y-m-d H:i T" }}').render(Context({"t": AT}))
        assert (
            html == '<time datetime="2026-12-03T08:32:05Z" title="2026-12-03 08:32:05 UTC">2026-12-03 00:32 PST</time>'
        )
    # UTC by default; a naive value is taken as UTC; a date has no zone; nothing is nothing.
    assert ">2026-12-03 08:32<" in str(render_time(AT))
    assert str(render_time(dt.datetime(2026, 1, 2, 3, 4))) == (
        '<time datetime="2026-01-02T03:04:00Z" title="2026-01-02 03:04:00 UTC">2026-01-02 03:04</time>'
    )
    assert str(render_time(dt.date(2026, 1, 2), "Y-m-d")) == '<time datetime="2026-01-02">2026-01-02</time>'
    assert render_time(None) == "" and render_time("") == "" and render_time("soon") == "soon"


def test_the_hour_a_dst_change_repeats_is_told_apart_by_its_utc_title():
    before = dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)  # 02:30 CEST
    after = dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC)  # 02:30 CET, an hour later
    with timezone.override(zoneinfo.ZoneInfo("Europe/Berlin")):
        first, second = str(render_time(before)), str(render_time(after))
    assert first.endswith(">2026-10-25 02:30</time>") and second.endswith(">2026-10-25 02:30</time>")
    assert 'title="2026-10-25 00:30:00 UTC"' in first and 'title="2026-10-25 01:30:00 UTC"' in second


@pytest.mark.parametrize(
    "value, text",
    [
        (dt.timedelta(seconds=0), "0 s"),
        (dt.timedelta(seconds=45), "45 s"),
        (dt.timedelta(seconds=0.42), "0.4 s"),
        (dt.timedelta(seconds=9.5), "9.5 s"),
        (dt.timedelta(minutes=12, seconds=59), "12 min"),
        (dt.timedelta(hours=3, minutes=20), "3 h 20 min"),
        (dt.timedelta(hours=3), "3 h"),
        (dt.timedelta(hours=31, minutes=5), "31 h"),
        (dt.timedelta(hours=47, minutes=59), "47 h"),
        (dt.timedelta(hours=48), "2 d"),
        (dt.timedelta(days=2, hours=4, minutes=30), "2 d 4 h"),
        (dt.timedelta(days=400), "400 d"),
        (-dt.timedelta(hours=5), "-5 h"),
        (90, "1 min"),
        (7200.0, "2 h"),
        (None, ""),
        ("31 h", ""),
        (True, ""),
        (float("nan"), ""),
    ],
)
def test_duration_reads_as_people_say_it(value, text):
    assert human_duration(value) == text
    assert Template("{% load rollout_tags %}{{ v|duration }}").render(Context({"v": value})) == text


def _updated_time(client) -> str:
    html = client.get("/").content.decode()
    match = re.search(r'<time datetime="([^"]+)" title="([^"]+) UTC">([^<]+)</time>', html)
    assert match, html
    return match.group(3)


@pytest.fixture
def one_rollout(users, tenants):
    r = services.rollout_create_from_playbook(name="Zoned", owner=users[Role.ROLLOUT_ADMIN])
    Rollout.objects.filter(pk=r.pk).update(updated_at=AT)
    return r


def test_the_browser_zone_cookie_moves_displayed_times(client_for, one_rollout):
    client = client_for(Role.AUDITOR)
    assert _updated_time(client) == "2026-12-03 08:32"
    client.cookies["rgd_tz"] = "Asia/Kolkata"
    assert _updated_time(client) == "2026-12-03 14:02"
    assert 'id="time-zone-in-force">Asia/Kolkata</a>' in client.get("/").content.decode()


@pytest.mark.parametrize(
    "bad",
    ["Mars/Olympus_Mons", "../../../etc/passwd", "/usr/share/zoneinfo/UTC", "Europe/Berlin\\", "x" * 300, "", "utc"],
)
def test_a_bad_zone_cookie_is_ignored_never_a_500(client_for, one_rollout, bad):
    client = client_for(Role.AUDITOR)
    client.cookies["rgd_tz"] = bad
    response = client.get("/")
    assert response.status_code == 200
    assert _updated_time(client) == "2026-12-03 08:32"
    assert client.get("/preferences/").status_code == 200
    # The login page (no user) and the API (no session) too.
    client.logout()
    client.cookies["rgd_tz"] = bad
    assert client.get("/login/").status_code == 200


def test_a_saved_preference_beats_the_browser_and_a_bad_saved_one_is_ignored(client_for, users, one_rollout):
    auditor = users[Role.AUDITOR]
    UserPreference.objects.create(user=auditor, time_zone="America/New_York")
    client = client_for(Role.AUDITOR)  # logging in copies the preference into the session
    client.cookies["rgd_tz"] = "Asia/Kolkata"
    assert _updated_time(client) == "2026-12-03 03:32"
    # A zone that is no longer valid (say, removed from tzdata) falls back to the browser's.
    UserPreference.objects.filter(user=auditor).update(time_zone="Atlantis/Capital")
    client = client_for(Role.AUDITOR)
    assert _updated_time(client) == "2026-12-03 14:02"


def test_a_session_from_before_preferences_loads_it_once(client_for, users, one_rollout, django_assert_num_queries):
    UserPreference.objects.create(user=users[Role.AUDITOR], time_zone="Asia/Tokyo")
    client = client_for(Role.AUDITOR)
    session = client.session
    del session[preferences.SESSION_KEY]
    session.save()
    assert _updated_time(client) == "2026-12-03 17:32"
    assert client.session[preferences.SESSION_KEY] == "Asia/Tokyo"


def test_the_preference_page_sets_and_clears_the_zone(client_for, users, one_rollout):
    client = client_for(Role.SUPPORT_LEAD)
    page = client.get("/preferences/")
    html = page.content.decode()
    assert page.status_code == 200 and '<option value="Europe/Berlin">Europe/Berlin</option>' in html
    assert '<option value="" selected>My browser&#x27;s zone</option>' in html
    assert 'data-zone="UTC"' in html
    response = client.post("/preferences/", {"time_zone": "Europe/Berlin"}, follow=True)
    assert "Times are now shown in Europe/Berlin." in response.content.decode()
    assert UserPreference.objects.get(user=users[Role.SUPPORT_LEAD]).time_zone == "Europe/Berlin"
    assert 'data-zone="Europe/Berlin"' in response.content.decode()
    assert '<option value="Europe/Berlin" selected>' in response.content.decode()
    assert _updated_time(client) == "2026-12-03 09:32"
    # Back to the browser's zone.
    client.cookies["rgd_tz"] = "Asia/Kolkata"
    client.post("/preferences/", {"time_zone": ""})
    assert UserPreference.objects.get(user=users[Role.SUPPORT_LEAD]).time_zone == ""
    assert _updated_time(client) == "2026-12-03 14:02"


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "../etc/passwd", "x" * 100])
def test_the_preference_page_refuses_an_unknown_zone_and_writes_nothing(client_for, users, bad):
    client = client_for(Role.AUDITOR)
    response = client.post("/preferences/", {"time_zone": bad})
    assert response.status_code == 400
    assert "Select a valid choice." in response.content.decode()
    assert not UserPreference.objects.exists()


def test_the_service_refuses_an_unknown_zone(users):
    with pytest.raises(preferences.InvalidTimeZone) as exc:
        preferences.preference_set_time_zone(user=users[Role.AUDITOR], time_zone="Mars/Olympus_Mons")
    assert exc.value.field == "time_zone" and "not a time zone" in exc.value.message
    assert not UserPreference.objects.exists()
    saved = preferences.preference_set_time_zone(user=users[Role.AUDITOR], time_zone=" Asia/Tokyo ")
    assert saved.time_zone == "Asia/Tokyo"
    assert preferences.preference_set_time_zone(user=users[Role.AUDITOR], time_zone="").time_zone == ""
    assert UserPreference.objects.count() == 1
