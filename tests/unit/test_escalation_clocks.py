"""Due-time arithmetic on real calendars: the Chinese State Council arrangement for 2025–2026
(chinesecalendar) and New York's public holidays (holidays), across DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.escalation.clocks import ClockMath
from shared.citypack.sla import ClockSpec
from shared.workdays import ChineseWorkdays, HolidayWorkdays, Weekdays

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
CN = ClockMath(SH, ChineseWorkdays())
NYC = ClockMath(NY, HolidayWorkdays("US", "NY", ["Susan B. Anthony Day"]))


def working(text: str) -> ClockSpec:
    return ClockSpec.model_validate({"within": text, "calendar": "working"})


def wall(text: str) -> ClockSpec:
    return ClockSpec.model_validate(text)


def local(tz: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=tz, fold=fold)  # type: ignore[misc]


# --- the Chinese calendar -------------------------------------------------------------------


def test_national_day_2025_holidays_are_skipped_and_the_make_up_saturday_counts() -> None:
    # Oct 1–8 off; Sat Oct 11 is a make-up working day. Working days after Tue Sep 30:
    # Oct 9, 10, 11 (Sat), 13, 14, 15, 16 → the 7th is Thu Oct 16.
    due = CN.due(local(SH, 2025, 9, 30, 10), working("7d"))
    assert due == local(SH, 2025, 10, 16, 10)


def test_make_up_sunday_before_national_day_2025_is_a_working_day() -> None:
    # Sun Sep 28 2025 is a make-up working day: one working day after Fri Sep 26.
    assert CN.due(local(SH, 2025, 9, 26, 10), working("1d")) == local(SH, 2025, 9, 28, 10)


def test_spring_festival_2026_with_make_up_saturday_and_monday_holiday() -> None:
    # Sat Feb 14 2026 works (make-up); Feb 15–23 off (Mon Feb 23 included); then Tue Feb 24.
    due = CN.due(local(SH, 2026, 2, 13, 16), working("3d"))
    assert due == local(SH, 2026, 2, 25, 16)


def test_elapsed_working_hours_continue_on_the_make_up_saturday() -> None:
    # 8 h remain of Fri Feb 13; the other 4 h fall on the make-up Saturday Feb 14.
    due = CN.due(local(SH, 2026, 2, 13, 16), working("12h"))
    assert due == local(SH, 2026, 2, 14, 4)


def test_elapsed_working_hours_jump_over_the_whole_national_day_break() -> None:
    # 4 h left of Tue Sep 30 2025, the remaining 4 h on Thu Oct 9 (first working day after).
    due = CN.due(local(SH, 2025, 9, 30, 20), working("8h"))
    assert due == local(SH, 2025, 10, 9, 4)


def test_clock_started_on_a_holiday_starts_on_the_next_working_day_a_make_up_sunday() -> None:
    # Jan 1–3 2026 off, Sun Jan 4 works: a clock started Fri Jan 2 begins Jan 4 00:00.
    due = CN.due(local(SH, 2026, 1, 2, 9), working("1d"))
    assert due == local(SH, 2026, 1, 5, 0)


def test_make_up_sunday_before_national_day_2026() -> None:
    # Sun Sep 20 2026 is a make-up working day.
    assert CN.due(local(SH, 2026, 9, 18, 15), working("1d")) == local(SH, 2026, 9, 20, 15)


def test_ordinary_weekend_is_skipped() -> None:
    assert CN.due(local(SH, 2025, 11, 14, 10), working("1d")) == local(SH, 2025, 11, 17, 10)


def test_wall_clock_ignores_holidays() -> None:
    # Emergencies run 7×24: two hours on National Day are two hours.
    assert CN.due(local(SH, 2025, 10, 1, 10), wall("2h")) == local(SH, 2025, 10, 1, 12)


def test_year_beyond_the_installed_calendar_falls_back_to_weekdays_and_says_so() -> None:
    calendar = ChineseWorkdays()
    assert calendar.covers(date(2026, 10, 10))
    assert not calendar.covers(date(2099, 1, 1))
    assert calendar.is_workday(date(2099, 1, 2))  # a Friday
    assert not calendar.is_workday(date(2099, 1, 3))  # a Saturday


# --- New York -------------------------------------------------------------------------------


def test_nyc_thanksgiving_is_skipped() -> None:
    assert NYC.due(local(NY, 2026, 11, 25, 10), working("1d")) == local(NY, 2026, 11, 27, 10)


def test_nyc_observed_independence_day_and_juneteenth_are_skipped() -> None:
    assert NYC.due(local(NY, 2026, 7, 2, 9), working("1d")) == local(NY, 2026, 7, 6, 9)
    assert NYC.due(local(NY, 2026, 6, 18, 14), working("1d")) == local(NY, 2026, 6, 22, 14)


def test_nyc_lincolns_birthday_is_a_holiday_but_ignored_names_are_not() -> None:
    assert NYC.due(local(NY, 2026, 2, 11, 10), working("1d")) == local(NY, 2026, 2, 13, 10)
    # Tue Feb 15 2028 is Susan B. Anthony Day, ignored by the pack: a working day.
    assert NYC.due(local(NY, 2028, 2, 14, 10), working("1d")) == local(NY, 2028, 2, 15, 10)
    strict = ClockMath(NY, HolidayWorkdays("US", "NY"))
    assert strict.due(local(NY, 2028, 2, 14, 10), working("1d")) == local(NY, 2028, 2, 16, 10)


def test_dst_spring_forward_hours_are_elapsed_days_keep_the_local_time() -> None:
    start = local(NY, 2026, 3, 7, 22)  # EST; clocks jump 02:00 → 03:00 on Mar 8
    assert NYC.due(start, wall("24h")) == local(NY, 2026, 3, 8, 23)
    assert NYC.due(start, wall("24h")) - start == timedelta(hours=24)
    assert NYC.due(start, wall("1d")) == local(NY, 2026, 3, 8, 22)
    assert NYC.due(start, wall("1d")) - start == timedelta(hours=23)


def test_dst_gap_time_moves_forward_by_the_gap() -> None:
    # 02:30 does not exist on Mar 8 2026 in New York: it becomes 03:30 EDT.
    due = NYC.due(local(NY, 2026, 3, 7, 2, 30), wall("1d"))
    assert due.astimezone(NY).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 30)
    assert due == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


def test_dst_fall_back_ambiguous_time_takes_the_first_occurrence() -> None:
    due = NYC.due(local(NY, 2026, 10, 31, 1, 30), wall("1d"))
    assert due == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, not EST
    assert NYC.due(local(NY, 2026, 10, 31, 12), wall("24h")) == local(NY, 2026, 11, 1, 11)


def test_working_days_across_dst_keep_the_local_time() -> None:
    # Fri Oct 30 2026 10:00 EDT + 1 working day → Mon Nov 2 10:00 EST (25 h Sunday skipped).
    assert NYC.due(local(NY, 2026, 10, 30, 10), working("1d")) == local(NY, 2026, 11, 2, 10)


# --- clock specs ----------------------------------------------------------------------------


def test_clock_spec_forms() -> None:
    assert wall("7d").days == 7
    assert wall("7d").rest == timedelta(0)
    mixed = working("1d12h")
    assert (mixed.days, mixed.rest, mixed.basis.value) == (1, timedelta(hours=12), "working")
    assert wall("36h").days == 0
    assert wall("36h").rest == timedelta(hours=36)
    with pytest.raises(ValueError, match="must allow some time"):
        ClockSpec.model_validate("0s")
    with pytest.raises(ValueError, match="bad duration"):
        ClockSpec.model_validate("seven days")
    with pytest.raises(ValueError, match="unknown key"):
        ClockSpec.model_validate({"within": "1d", "calender": "working"})


# --- properties -----------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 1), timezones=st.just(UTC)
)
allowances = st.builds(
    lambda days, minutes: f"{days}d{minutes}m" if days else f"{max(minutes, 1)}m",
    st.integers(0, 20),
    st.integers(0, 3000),
)


@settings(max_examples=200, deadline=None)
@given(start=instants, text=allowances)
def test_working_due_is_on_a_working_day_never_before_the_wall_due(start: datetime, text: str):
    due = CN.due(start, working(text))
    wall_due = CN.due(start, wall(text))
    assert due >= wall_due  # skipping days off can only make it later
    local_due = due.astimezone(SH)
    # A due time lies on a working day, or exactly at the midnight that ends one.
    on_day = local_due.date() if local_due.time() != datetime.min.time() else None
    if on_day is not None:
        assert ChineseWorkdays().is_workday(on_day)


@settings(max_examples=200, deadline=None)
@given(first=instants, gap=st.integers(0, 10_000), text=allowances)
def test_later_start_never_gives_an_earlier_due(first: datetime, gap: int, text: str) -> None:
    second = first + timedelta(minutes=gap)
    for math in (CN, NYC, ClockMath(UTC, Weekdays())):  # type: ignore[arg-type]
        assert math.due(second, working(text)) >= math.due(first, working(text))


@settings(max_examples=100, deadline=None)
@given(start=instants, minutes=st.integers(1, 100_000))
def test_wall_hours_are_exactly_elapsed_time(start: datetime, minutes: int) -> None:
    assert NYC.due(start, wall(f"{minutes}m")) - start == timedelta(minutes=minutes)
