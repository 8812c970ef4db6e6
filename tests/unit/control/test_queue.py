"""The queue's order and admission (railyard.control.queue): priority, fair share between
teams, first in first out, per-team quotas, and the place and reason of every waiting job.
Pure functions: no database, no Ray."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from railyard.control.queue import Quota, Work, job_cpus, plan, preemption_victim, queue_order

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NO_LIMIT = Quota()


def work(n: int, owner: str, *, priority: int = 50, cpus: float = 1.0, on_ray: bool = False,
         pool: str = "cpu") -> Work:
    """The n-th job created (n orders them in time)."""
    return Work(id=f"job-{n:02d}", owner=owner, priority=priority,
                created_at=T0 + timedelta(seconds=n), pool=pool, cpus=cpus, on_ray=on_ray)


def ids(items) -> list[str]:
    return [w.id for w in items]


def test_first_in_first_out_within_one_team_and_priority():
    queued = [work(3, "a"), work(1, "a"), work(2, "a")]
    assert ids(queue_order(queued)) == ["job-01", "job-02", "job-03"]


def test_higher_priority_goes_first_whatever_its_age():
    queued = [work(1, "a", priority=10), work(2, "a"), work(3, "a", priority=90)]
    assert ids(queue_order(queued)) == ["job-03", "job-02", "job-01"]


def test_fair_share_interleaves_two_teams_of_equal_priority():
    backlog_a = [work(n, "a") for n in range(1, 5)]          # a sent four first
    backlog_b = [work(n, "b") for n in range(5, 9)]          # then b four
    order = queue_order(backlog_a + backlog_b)
    assert [w.owner for w in order] == ["a", "b"] * 4
    assert ids(order)[:2] == ["job-01", "job-05"]


def test_the_team_with_less_on_ray_goes_first():
    running = [work(n, "a", on_ray=True) for n in range(1, 4)]      # a holds three
    queued = [work(4, "a"), work(5, "a"), work(6, "b"), work(7, "b")]
    order = queue_order(running + queued)
    # b (nothing on Ray) goes until it has caught up with a's three, then they alternate.
    assert [w.owner for w in order] == ["b", "b", "a", "a"]
    # With CPUs as the tie-break: equal job counts, fewer CPUs first.
    wide = [work(1, "a", on_ray=True, cpus=8), work(2, "b", on_ray=True, cpus=2),
            work(3, "a"), work(4, "b")]
    assert [w.owner for w in queue_order(wide)] == ["b", "a"]


def test_priority_beats_fair_share():
    running = [work(1, "a", on_ray=True), work(2, "a", on_ray=True)]
    queued = [work(3, "b", priority=40), work(4, "a", priority=60)]
    assert ids(queue_order(running + queued)) == ["job-04", "job-03"]


def test_job_quota_holds_and_names_the_team_and_position():
    running = [work(n, "fraud", on_ray=True) for n in range(1, 3)]
    queued = [work(n, "fraud") for n in range(3, 6)]
    result = plan(running + queued, {}, Quota(max_jobs=2))
    assert result.released == []
    places = result.places
    assert [(p.position, p.queued_in_pool) for p in places] == [(1, 3), (2, 3), (3, 3)]
    assert places[2].reason == ("queued: position 3 of 3 in pool cpu (team 'fraud' at its "
                                "limit of 2 running)")
    # One finishes: exactly one, the oldest, is released.
    result = plan(running[1:] + queued, {}, Quota(max_jobs=2))
    assert ids(result.released) == ["job-03"]
    assert result.place_of("job-03").reason is None
    assert result.place_of("job-04").reason.startswith("queued: position 2 of 3")


def test_a_team_quota_overrides_the_default_and_teams_do_not_hold_each_other_up():
    queued = [work(n, "a") for n in range(1, 4)] + [work(n, "b") for n in range(4, 7)]
    result = plan(queued, {"a": Quota(max_jobs=1)}, Quota(max_jobs=0))
    assert ids(result.released) == ["job-01", "job-04", "job-05", "job-06"]
    waiting = [p for p in result.places if not p.released]
    assert {p.job.owner for p in waiting} == {"a"}
    assert "team 'a' at its limit of 1 running" in waiting[0].reason


def test_cpu_quota_holds_and_a_small_job_does_not_overtake_a_wide_one_of_its_team():
    running = [work(1, "a", on_ray=True, cpus=6)]
    queued = [work(2, "a", cpus=4), work(3, "a", cpus=1)]
    result = plan(running + queued, {"a": Quota(max_cpus=8)}, NO_LIMIT)
    assert result.released == []
    assert result.place_of("job-02").why == ("team 'a' at its limit of 8 CPUs: 6 in use on "
                                             "Ray, this job needs 4")
    assert result.place_of("job-03").why == result.place_of("job-02").why
    # Within the quota both go: 4 + 1 CPUs of 8.
    assert ids(plan(queued, {"a": Quota(max_cpus=8)}, NO_LIMIT).released) == ["job-02",
                                                                             "job-03"]


def test_a_job_wider_than_its_team_may_ever_use_waits_without_blocking_the_team():
    queued = [work(1, "a", cpus=16), work(2, "a", cpus=2)]
    result = plan(queued, {}, Quota(max_cpus=8))
    assert ids(result.released) == ["job-02"]
    reason = result.place_of("job-01").reason
    assert "needs 16 CPUs, more than team 'a' may use at once (8)" in reason
    assert "railyard team set a --max-cpus" in reason


def test_release_follows_priority_within_a_team():
    running = [work(1, "a", on_ray=True)]
    queued = [work(2, "a", priority=10), work(3, "a", priority=10), work(4, "a", priority=95)]
    result = plan(running + queued, {}, Quota(max_jobs=2))
    assert ids(result.released) == ["job-04"]
    assert [p.position for p in result.places] == [1, 2, 3]


def test_positions_count_per_pool():
    queued = [work(1, "a", pool="gpu"), work(2, "a"), work(3, "b", pool="gpu"), work(4, "b")]
    result = plan(queued, {}, Quota(max_jobs=0))
    pools = result.by_pool()
    assert list(pools) == ["cpu", "gpu"]
    assert [(p.job.id, p.position, p.queued_in_pool) for p in pools["gpu"]] == [
        ("job-01", 1, 2), ("job-03", 2, 2)]


def test_paused_releases_nothing():
    result = plan([work(1, "a")], {}, NO_LIMIT, paused=True)
    assert result.released == []
    assert "RAILYARD_SUBMISSION_PAUSED" in result.places[0].reason


def test_job_cpus_from_train_resources():
    assert job_cpus({}) == 1
    assert job_cpus({"num_workers": 4}) == 4
    assert job_cpus({"num_workers": 3, "cpus_per_worker": 2.5}) == 7.5


def test_preemption_picks_the_lowest_priority_newest_job_of_the_pool():
    running = [work(1, "a", on_ray=True, priority=20), work(2, "b", on_ray=True, priority=20),
               work(3, "a", on_ray=True, priority=5, pool="gpu"),
               work(4, "c", on_ray=True, priority=80)]
    urgent = work(5, "d", priority=95)
    assert preemption_victim(running, urgent, min_priority=90).id == "job-02"
    assert preemption_victim(running, work(6, "d", priority=85), min_priority=90) is None
    assert preemption_victim(running[3:], urgent, min_priority=90).id == "job-04"
    assert preemption_victim([work(7, "x", on_ray=True, priority=99)], urgent,
                             min_priority=90) is None
