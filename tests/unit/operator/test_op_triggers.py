"""Alert, monitor and schedule triggers: what is written to the status, what decide takes."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest
from modelcycle_fakes import T0, World, make_body, make_spec

from modelcycle_operator.pure import intake, triggers
from modelcycle_operator.pure.alerts import Alert, parse_payload
from modelcycle_operator.pure.decide import CreateJob
from modelcycle_operator.pure.health import Assessment

SECOND = datetime.timedelta(seconds=1)


def alerts_of(*raws: dict[str, Any]) -> list[Alert]:
    return parse_payload({"version": "4", "status": "firing", "alerts": list(raws)})[1]


def raw_alert(fingerprint: str = "fp1", starts: str = "2026-12-01T11:00:00Z", **kw: Any) -> Any:
    return {
        "status": kw.pop("status", "firing"),
        "labels": {"alertname": "AccuracyLow", "modelcycle": "iris", "namespace": "ml", **kw},
        "annotations": {"summary": "accuracy below 0.8"},
        "startsAt": starts,
        "fingerprint": fingerprint,
    }


def serving(cooldown: int = 0, **monitoring: Any) -> World:
    """A world whose cycle 1 is promoted and serving, with this monitoring section."""
    world = World(make_body(spec=make_spec(monitoring={"cooldownSeconds": cooldown, **monitoring})))
    world.reconcile()
    world.run_cycle()
    assert world.status["step"] == "Serving"
    return world


def write(world: World, change: intake.Change) -> None:
    world.body["status"] = copy.deepcopy(change.status)


def take(world: World, *raws: dict[str, Any], later: float = 1.0) -> intake.Change:
    world.now += later * SECOND
    change = intake.take_alerts(world.body, alerts_of(*raws), world.now)
    write(world, change)
    return change


def results(change: intake.Change) -> list[str]:
    return [r.result for r in change.results]


def event_reasons(change: intake.Change) -> list[str]:
    return [e.reason for e in change.events]


# --- the helpers both sides share ---------------------------------------------------------


class TestHelpers:
    @pytest.mark.parametrize(
        ("status", "cooldown", "left"),
        [
            ({}, 300, 0.0),
            ({"lastTrigger": {"time": "2026-12-01T11:58:00Z"}}, 300, 180.0),
            ({"lastTrigger": {"time": "2026-12-01T11:55:00Z"}}, 300, 0.0),
            ({"lastTrigger": {"time": "2026-12-01T11:54:59Z"}}, 300, 0.0),
            ({"lastTrigger": {"time": "2026-12-01T11:58:00Z"}}, 0, 0.0),
            ({"lastTrigger": {"time": "garbage"}}, 300, 0.0),
            ({"lastTrigger": "x"}, 300, 0.0),
        ],
    )
    def test_cooldown_left(self, status: dict[str, Any], cooldown: int, left: float) -> None:
        assert triggers.cooldown_left(status, cooldown, T0) == left

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (None, None),
            ({}, None),
            ({"pending": "x"}, None),
            ({"pending": {"type": "Manual"}}, None),
            (
                {"pending": {"type": "Alert", "reason": "r", "time": "t", "key": "k"}},
                triggers.Pending("Alert", "r", "t", "k"),
            ),
            ({"pending": {"type": "Monitor"}}, triggers.Pending("Monitor", "Monitor", "", "")),
        ],
    )
    def test_pending_of(self, raw: Any, expected: triggers.Pending | None) -> None:
        assert triggers.pending_of(raw) == expected

    def test_remember_key_is_bounded_and_newest_last(self) -> None:
        keys: list[str] = []
        for i in range(triggers.ALERT_KEYS_LIMIT + 10):
            keys = triggers.remember_key(keys, f"k{i}")
        assert len(keys) == triggers.ALERT_KEYS_LIMIT
        assert keys[-1] == f"k{triggers.ALERT_KEYS_LIMIT + 9}"
        assert keys[0] == "k10"
        assert triggers.remember_key(["a", "b", "c"], "a") == ["b", "c", "a"]

    @pytest.mark.parametrize(
        ("status", "running"),
        [
            ({}, False),
            ({"cycle": 0, "step": "Pending"}, False),
            ({"cycle": 2, "step": "Training"}, True),
            ({"cycle": 2, "step": "RollingOut"}, True),
            ({"cycle": 2, "step": "Serving"}, False),
            ({"cycle": 2, "step": "Failed"}, False),
            ({"cycle": True, "step": "Training"}, False),
        ],
    )
    def test_cycle_in_progress(self, status: dict[str, Any], running: bool) -> None:
        assert triggers.cycle_in_progress(status) is running


# --- alerts -------------------------------------------------------------------------------


class TestTakeAlerts:
    def test_firing_alert_becomes_a_pending_trigger(self) -> None:
        world = serving()
        change = take(world, raw_alert())
        assert results(change) == ["Retrain"]
        assert change.wake
        pending = world.status["triggers"]["pending"]
        assert pending["type"] == "Alert"
        assert pending["key"] == "fp1@2026-12-01T11:00:00Z"
        assert "AccuracyLow" in pending["reason"]
        assert "accuracy below 0.8" in pending["reason"]
        assert world.status["triggers"]["alertKeys"] == ["fp1@2026-12-01T11:00:00Z"]
        assert world.status["triggers"]["lastAlert"]["result"] == "Retrain"
        assert event_reasons(change) == ["RetrainRequested"]

    def test_decide_starts_the_cycle_and_records_the_trigger(self) -> None:
        world = serving()
        take(world, raw_alert())
        decision = world.reconcile()
        assert [
            a.manifest["metadata"]["name"] for a in decision.actions if isinstance(a, CreateJob)
        ] == ["iris-train-2"]
        status = world.status
        assert status["cycle"] == 2
        assert status["lastTrigger"]["type"] == "Alert"
        assert status["lastTrigger"]["value"] == "fp1@2026-12-01T11:00:00Z"
        assert "pending" not in status["triggers"]
        world.run_cycle()
        assert world.status["history"][-1]["trigger"] == "Alert"

    def test_repeat_is_a_duplicate_and_retrains_once(self) -> None:
        world = serving()
        take(world, raw_alert())
        world.reconcile()
        change = take(world, raw_alert())
        assert results(change) == ["Duplicate"]
        assert not change.wake
        assert change.events == ()
        world.run_cycle()
        world.reconcile()
        assert world.status["cycle"] == 2

    def test_two_alerts_in_one_payload_retrain_once(self) -> None:
        world = serving()
        change = take(world, raw_alert("a"), raw_alert("b"))
        assert results(change) == ["Retrain", "Pending"]
        assert world.status["triggers"]["alertKeys"] == [
            "a@2026-12-01T11:00:00Z",
            "b@2026-12-01T11:00:00Z",
        ]
        world.reconcile()
        world.run_cycle()
        world.reconcile()
        assert world.status["cycle"] == 2

    def test_a_second_alert_joins_the_pending_one(self) -> None:
        world = serving()
        take(world, raw_alert("a"))
        change = take(world, raw_alert("b"))
        assert results(change) == ["Pending"]
        assert world.status["triggers"]["pending"]["key"] == "a@2026-12-01T11:00:00Z"

    def test_inside_the_cooldown_is_skipped_and_recorded(self) -> None:
        world = serving(cooldown=300)
        change = take(world, raw_alert())
        assert results(change) == ["Cooldown"]
        assert not change.wake
        t = world.status["triggers"]
        assert "pending" not in t
        assert t["lastSkipped"]["type"] == "Alert"
        assert t["lastSkipped"]["reason"] == "Cooldown"
        assert t["lastSkipped"]["key"] == "fp1@2026-12-01T11:00:00Z"
        assert "alertKeys" not in t  # not handled: a repeat after the cooldown may retrain
        assert event_reasons(change) == ["AlertSkipped"]
        world.reconcile()
        assert world.status["cycle"] == 1

    def test_the_same_skip_is_not_repeated(self) -> None:
        world = serving(cooldown=300)
        take(world, raw_alert())
        before = copy.deepcopy(world.status)
        change = take(world, raw_alert(), later=10)
        assert results(change) == ["Cooldown"]
        assert change.events == ()
        assert world.status == before

    def test_after_the_cooldown_the_repeat_retrains(self) -> None:
        world = serving(cooldown=300)
        take(world, raw_alert())
        change = take(world, raw_alert(), later=400)
        assert results(change) == ["Retrain"]

    def test_resolved_is_recorded_and_retrains_nothing(self) -> None:
        world = serving()
        change = take(world, raw_alert(status="resolved"))
        assert results(change) == ["Resolved"]
        assert not change.wake
        assert world.status["triggers"]["lastAlert"]["status"] == "resolved"
        assert event_reasons(change) == ["AlertResolved"]
        assert "pending" not in world.status["triggers"]

    def test_during_a_cycle_it_is_skipped(self) -> None:
        world = serving()
        world.annotate("modelcycle.dev/retrain", "1")
        world.reconcile()
        assert world.status["step"] == "Pending"
        change = take(world, raw_alert())
        assert results(change) == ["CycleInProgress"]
        assert world.status["triggers"]["lastSkipped"]["reason"] == "CycleInProgress"
        assert "pending" not in world.status["triggers"]

    @pytest.mark.parametrize(
        ("monitoring", "extra", "result"),
        [
            ({"alerts": {"enabled": False}}, {}, "AlertsDisabled"),
            ({"alerts": {"matchLabels": {"severity": "critical"}}}, {}, "NotMatched"),
            ({"alerts": {"matchLabels": {"severity": "critical"}}}, {"severity": "critical"},
             "Retrain"),
        ],
    )  # fmt: skip
    def test_spec_gates(
        self, monitoring: dict[str, Any], extra: dict[str, str], result: str
    ) -> None:
        world = serving(**monitoring)
        change = take(world, raw_alert(**extra))
        assert results(change) == [result]

    def test_suspended(self) -> None:
        world = serving()
        world.edit_spec(suspend=True)
        world.reconcile()
        assert results(take(world, raw_alert())) == ["Suspended"]

    def test_invalid_spec(self) -> None:
        world = serving()
        world.body["spec"]["evaluation"]["threshold"] = "high"
        change = take(world, raw_alert(), raw_alert("b"))
        assert results(change) == ["InvalidSpec", "InvalidSpec"]
        assert not change.wake

    def test_alert_keys_stay_bounded(self) -> None:
        world = serving()
        for i in range(triggers.ALERT_KEYS_LIMIT + 5):
            take(world, raw_alert(f"f{i}"))
        keys = world.status["triggers"]["alertKeys"]
        assert len(keys) == triggers.ALERT_KEYS_LIMIT
        assert keys[-1].startswith(f"f{triggers.ALERT_KEYS_LIMIT + 4}@")

    def test_nothing_is_written_for_a_repeat(self) -> None:
        world = serving()
        take(world, raw_alert())
        before = copy.deepcopy(world.status)
        take(world, raw_alert())
        assert world.status == before


# --- decide and the pending trigger -------------------------------------------------------


def pend(world: World, type_: str = "Monitor", key: str = "k") -> None:
    world.status.setdefault("triggers", {})["pending"] = {
        "type": type_,
        "reason": f"{type_} says so",
        "time": "2026-12-01T12:00:00Z",
        "key": key,
    }


class TestDecideTakesPending:
    @pytest.mark.parametrize("type_", ["Alert", "Monitor", "Schedule"])
    def test_each_type_starts_a_cycle(self, type_: str) -> None:
        world = serving()
        pend(world, type_)
        world.reconcile()
        assert world.status["cycle"] == 2
        assert world.status["lastTrigger"]["type"] == type_
        assert world.status["lastTrigger"]["reason"] == f"{type_} says so"
        assert "pending" not in world.status["triggers"]

    def test_waits_for_the_running_cycle(self) -> None:
        world = serving()
        world.annotate("modelcycle.dev/retrain", "go")
        world.reconcile()
        assert world.status["cycle"] == 2
        pend(world)
        world.reconcile()
        assert world.status["cycle"] == 2
        assert "pending" in world.status["triggers"]
        world.run_cycle()
        world.reconcile()
        assert world.status["cycle"] == 3
        assert world.status["lastTrigger"]["type"] == "Monitor"

    def test_waits_for_the_cooldown(self) -> None:
        world = serving(cooldown=60)
        pend(world)
        world.reconcile()
        assert world.status["cycle"] == 1
        assert "pending" in world.status["triggers"]
        world.reconcile(advance=60)
        assert world.status["cycle"] == 2

    def test_another_trigger_consumes_it(self) -> None:
        world = serving()
        pend(world)
        world.annotate("modelcycle.dev/retrain", "now")
        world.reconcile()
        assert world.status["lastTrigger"]["type"] == "Manual"
        assert "pending" not in world.status["triggers"]
        world.run_cycle()
        world.reconcile()
        assert world.status["cycle"] == 2

    def test_suspend_drops_it(self) -> None:
        world = serving()
        pend(world, "Alert", "fp@t")
        world.edit_spec(suspend=True)
        decision = world.reconcile()
        t = world.status["triggers"]
        assert "pending" not in t
        assert t["lastSkipped"]["reason"] == "Suspended"
        assert t["lastSkipped"]["key"] == "fp@t"
        assert "AlertSkipped" in [e.reason for e in decision.actions if hasattr(e, "reason")]
        world.edit_spec(suspend=False)
        world.reconcile()
        assert world.status["cycle"] == 1

    def test_malformed_pending_is_dropped(self) -> None:
        world = serving()
        world.status["triggers"]["pending"] = {"type": "Whatever"}
        world.reconcile()
        assert "pending" not in world.status["triggers"]
        assert world.status["cycle"] == 1

    def test_failed_cycle_restarts_on_a_pending_trigger(self) -> None:
        world = World(make_body(spec=make_spec(monitoring={"cooldownSeconds": 0})))
        world.reconcile()
        world.train_failed("train", "boom")
        world.reconcile()
        assert world.status["step"] == "Failed"
        pend(world)
        world.reconcile()
        assert world.status["cycle"] == 2


# --- the monitor's verdict ----------------------------------------------------------------


def verdict(status: str, reason: str, version: str = "1-deadbeef") -> Assessment:
    return Assessment(status, reason, f"{reason} message", version)


def observe(world: World, assessment: Assessment, later: float = 1.0) -> intake.Change:
    world.now += later * SECOND
    change = intake.monitor_observed(world.body, assessment, world.now)
    write(world, change)
    return change


class TestMonitorObserved:
    def test_degraded_with_retrain_requests_a_cycle(self) -> None:
        world = serving(builtin={"enabled": True})
        change = observe(world, verdict("True", "AccuracyDropped"))
        assert world.condition("Degraded")["status"] == "True"
        assert world.condition("Degraded")["reason"] == "AccuracyDropped"
        assert change.outcome == "Retrain"
        assert change.wake
        assert world.status["triggers"]["pending"]["key"] == "1-deadbeef:AccuracyDropped"
        assert event_reasons(change) == ["Degraded", "RetrainRequested"]
        world.reconcile()
        assert world.status["lastTrigger"]["type"] == "Monitor"

    def test_without_retrain_only_the_condition(self) -> None:
        world = serving(builtin={"enabled": True, "retrain": False})
        change = observe(world, verdict("True", "DriftDetected"))
        assert world.condition("Degraded")["reason"] == "DriftDetected"
        assert not change.wake
        assert "pending" not in world.status["triggers"]

    def test_cooldown_skips_once(self) -> None:
        world = serving(cooldown=600, builtin={"enabled": True})
        first = observe(world, verdict("True", "AccuracyDropped"))
        assert first.outcome == "Cooldown"
        assert event_reasons(first) == ["Degraded", "RetrainSkipped"]
        assert world.status["triggers"]["lastSkipped"]["type"] == "Monitor"
        again = observe(world, verdict("True", "AccuracyDropped"), later=5)
        assert again.outcome == "Cooldown"
        assert again.events == ()

    def test_transition_time_moves_only_on_a_flip(self) -> None:
        world = serving(builtin={"enabled": True, "retrain": False})
        observe(world, verdict("False", "InsufficientFeedback"))
        flipped = world.condition("Degraded")["lastTransitionTime"]
        observe(world, verdict("False", "Healthy"), later=30)
        assert world.condition("Degraded")["lastTransitionTime"] == flipped
        change = observe(world, verdict("True", "AccuracyDropped"), later=30)
        assert world.condition("Degraded")["lastTransitionTime"] != flipped
        assert event_reasons(change) == ["Degraded"]
        change = observe(world, verdict("False", "Healthy"), later=30)
        assert event_reasons(change) == ["Recovered"]

    def test_a_verdict_on_another_version_is_ignored(self) -> None:
        world = serving(builtin={"enabled": True})
        before = copy.deepcopy(world.status)
        change = observe(world, verdict("True", "AccuracyDropped", version="0-old"))
        assert change.outcome == "Stale"
        assert world.status == before

    def test_a_new_champion_resets_the_verdict(self) -> None:
        world = serving(builtin={"enabled": True})
        observe(world, verdict("True", "AccuracyDropped"))
        world.reconcile()
        world.run_cycle()
        assert world.status["champion"]["cycle"] == 2
        degraded = world.condition("Degraded")
        assert (degraded["status"], degraded["reason"]) == ("Unknown", "NewChampion")

    def test_a_rejected_challenger_keeps_the_verdict(self) -> None:
        world = serving(builtin={"enabled": True})
        observe(world, verdict("True", "AccuracyDropped"))
        world.reconcile()
        world.run_cycle(accuracy=0.1)
        assert world.status["step"] == "Rejected"
        assert world.condition("Degraded")["reason"] == "AccuracyDropped"

    def test_switching_the_monitor_off_forgets_its_verdict(self) -> None:
        world = serving(builtin={"enabled": True, "retrain": False})
        observe(world, verdict("True", "AccuracyDropped"))
        world.edit_spec(monitoring={"builtin": {"enabled": False}})
        world.reconcile()
        degraded = world.condition("Degraded")
        assert (degraded["status"], degraded["reason"]) == ("Unknown", "MonitorDisabled")

    def test_a_condition_it_does_not_own_is_left_alone(self) -> None:
        world = serving()
        world.reconcile()
        assert world.condition("Degraded")["reason"] == "Initializing"


# --- the schedule -------------------------------------------------------------------------


def every_minute(expression: str, after: datetime.datetime) -> datetime.datetime:
    if expression == "bad":
        raise ValueError("not cron")
    return after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)


def tick(world: World, later: float = 1.0) -> intake.Change:
    world.now += later * SECOND
    change = intake.schedule_tick(world.body, world.now, every_minute)
    write(world, change)
    return change


class TestSchedule:
    def test_first_tick_computes_the_next_fire(self) -> None:
        world = serving(schedule="*/1 * * * *")
        change = tick(world)
        t = world.status["triggers"]
        assert change.outcome == "Scheduled"
        assert t["schedule"] == "*/1 * * * *"
        assert t["nextScheduled"] == "2026-12-01T12:01:00Z"
        assert "lastScheduled" not in t
        assert not change.wake

    def test_fires_when_due_and_decide_starts_a_schedule_cycle(self) -> None:
        world = serving(schedule="*/1 * * * *")
        tick(world)
        assert tick(world, later=10).outcome == "Waiting"
        change = tick(world, later=60)
        assert change.outcome == "Retrain"
        assert change.wake
        t = world.status["triggers"]
        assert t["lastScheduled"] == "2026-12-01T12:01:00Z"
        assert t["nextScheduled"] == "2026-12-01T12:02:00Z"
        assert t["pending"]["key"] == "schedule@2026-12-01T12:01:00Z"
        world.reconcile()
        assert world.status["lastTrigger"]["type"] == "Schedule"

    def test_missed_fires_fire_once(self) -> None:
        world = serving(schedule="*/1 * * * *")
        tick(world)
        tick(world, later=3600)
        t = world.status["triggers"]
        assert t["lastScheduled"] == "2026-12-01T12:01:00Z"
        assert t["nextScheduled"] > cond_time(world.now)

    def test_cooldown_skips_a_fire(self) -> None:
        world = serving(cooldown=3600, schedule="*/1 * * * *")
        tick(world)
        change = tick(world, later=60)
        assert change.outcome == "Cooldown"
        assert world.status["triggers"]["lastSkipped"]["type"] == "Schedule"
        assert world.status["triggers"]["lastScheduled"] == "2026-12-01T12:01:00Z"

    def test_a_changed_expression_recomputes(self) -> None:
        world = serving(schedule="*/1 * * * *")
        tick(world)
        world.edit_spec(monitoring={"schedule": "*/5 * * * *"})
        change = tick(world)
        assert change.outcome == "Scheduled"
        assert world.status["triggers"]["schedule"] == "*/5 * * * *"

    def test_invalid_expression_warns_once(self) -> None:
        world = serving(schedule="bad")
        change = tick(world)
        assert change.outcome == "InvalidSchedule"
        assert [(e.type, e.reason) for e in change.events] == [("Warning", "InvalidSchedule")]
        assert "nextScheduled" not in world.status["triggers"]
        again = tick(world)
        assert again.outcome == "InvalidSchedule"
        assert again.events == ()

    def test_removing_the_schedule_clears_it(self) -> None:
        world = serving(schedule="*/1 * * * *")
        tick(world)
        tick(world, later=60)
        world.edit_spec(monitoring={"schedule": ""})
        assert tick(world).outcome == "NoSchedule"
        t = world.status["triggers"]
        assert "nextScheduled" not in t
        assert "schedule" not in t
        assert t["lastScheduled"] == "2026-12-01T12:01:00Z"


def cond_time(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")
