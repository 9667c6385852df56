"""Alertmanager's webhook payload: parsing, routing, the dedup key and the verdict."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from modelcycle_operator.pure.alerts import (
    MAX_ALERTS,
    MAX_LABELS,
    MAX_TEXT,
    ZERO_TIME,
    Alert,
    PayloadError,
    alert_verdict,
    parse_payload,
    parse_time,
)

UTC = datetime.UTC
T0 = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def make_alert(**overrides: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "status": "firing",
        "labels": {"alertname": "AccuracyLow", "modelcycle": "iris", "namespace": "ml"},
        "annotations": {"summary": "live accuracy below 0.8"},
        "startsAt": "2026-12-01T11:59:00.123456789Z",
        "endsAt": ZERO_TIME,
        "generatorURL": "http://prometheus/graph?g0.expr=x",
        "fingerprint": "a1b2c3d4e5f60718",
    }
    alert.update(overrides)
    return alert


def make_payload(*alerts: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="AccuracyLow"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "modelcycle",
        "groupLabels": {"alertname": "AccuracyLow"},
        "commonLabels": {"alertname": "AccuracyLow"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts) if alerts else [make_alert()],
    }
    payload.update(overrides)
    return payload


def one(payload: dict[str, Any]) -> Alert:
    _, alerts = parse_payload(payload)
    assert len(alerts) == 1
    return alerts[0]


# --- times ------------------------------------------------------------------------------


class TestParseTime:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-12-01T12:00:00Z", T0),
            ("2026-12-01T12:00:00z", T0),
            ("2026-12-01t12:00:00Z", T0),
            ("2026-12-01 12:00:00Z", T0),
            ("2026-12-01T12:00:00+00:00", T0),
            ("2026-12-01T14:00:00+02:00", T0),
            ("2026-12-01T07:00:00-05:00", T0),
            ("2026-12-01T12:00:00.5Z", T0.replace(microsecond=500000)),
            ("2026-12-01T12:00:00.123Z", T0.replace(microsecond=123000)),
            ("2026-12-01T12:00:00.123456Z", T0.replace(microsecond=123456)),
            # Alertmanager's nanoseconds: cut (not rounded) to microseconds.
            ("2026-12-01T12:00:00.123456789Z", T0.replace(microsecond=123456)),
            ("2026-12-01T12:00:00.999999999Z", T0.replace(microsecond=999999)),
            ("2026-12-01T12:00:00.000000001+00:00", T0),
            ("  2026-12-01T12:00:00Z  ", T0),
            (ZERO_TIME, datetime.datetime(1, 1, 1, tzinfo=UTC)),
        ],
    )
    def test_accepts_rfc3339(self, text: str, expected: datetime.datetime) -> None:
        assert parse_time(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "yesterday",
            "2026-12-01",
            "2026-12-01T12:00:00",  # no zone
            "2026-12-01T12:00Z",  # no seconds
            "2026-12-01T12:00:00.Z",  # a dot without digits
            "2026-12-01T12:00:00+0000",  # offset without colon
            "20261201T120000Z",  # basic format
            "2026-13-01T12:00:00Z",
            "2026-12-32T12:00:00Z",
            "2026-12-01T25:00:00Z",
            "2026-12-01T12:00:61Z",
            "2026-12-01T12:00:00+25:00",
            "2026-12-01T12:00:00ZZ",
            "1733054400",
        ],
    )
    def test_rejects_the_rest(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"."):
            parse_time(text)


# --- the payload ------------------------------------------------------------------------


class TestParsePayload:
    def test_alertmanager_payload(self) -> None:
        group, alerts = parse_payload(make_payload())
        assert group["receiver"] == "modelcycle"
        assert group["status"] == "firing"
        assert group["commonLabels"] == {"alertname": "AccuracyLow"}
        assert group["truncatedAlerts"] == 0
        [alert] = alerts
        assert alert.status == "firing"
        assert alert.name == "AccuracyLow"
        assert alert.target == ("ml", "iris")
        assert alert.fingerprint == "a1b2c3d4e5f60718"
        assert alert.starts_at == "2026-12-01T11:59:00.123456789Z"
        assert alert.ends_at == ZERO_TIME
        assert alert.annotations == {"summary": "live accuracy below 0.8"}
        assert alert.generator_url.startswith("http://prometheus")

    def test_the_key_keeps_the_exact_starts_at(self) -> None:
        """Alertmanager repeats the same string; nanoseconds must not be lost from the key."""
        alert = one(make_payload())
        assert alert.key == "a1b2c3d4e5f60718@2026-12-01T11:59:00.123456789Z"

    @pytest.mark.parametrize(
        ("change", "same"),
        [
            ({}, True),
            ({"annotations": {"summary": "other text"}}, True),
            ({"endsAt": "2026-12-01T12:30:00Z", "status": "resolved"}, True),
            ({"generatorURL": "http://elsewhere"}, True),
            ({"startsAt": "2026-12-01T11:59:00.123456788Z"}, False),
            ({"startsAt": "2026-12-01T12:59:00.123456789+01:00"}, False),  # same instant
            ({"fingerprint": "ffffffffffffffff"}, False),
        ],
    )
    def test_repeats_share_the_key(self, change: dict[str, Any], same: bool) -> None:
        first = one(make_payload())
        again = one(make_payload(make_alert(**change)))
        assert (first.key == again.key) is same

    def test_fingerprint_is_derived_when_missing(self) -> None:
        raw = make_alert()
        del raw["fingerprint"]
        a = one(make_payload(raw))
        b = one(make_payload(copy.deepcopy(raw)))
        assert a.fingerprint == b.fingerprint
        assert len(a.fingerprint) == 16
        other = one(make_payload({**raw, "labels": {**raw["labels"], "severity": "x"}}))
        assert other.fingerprint != a.fingerprint

    def test_empty_fingerprint_is_derived_too(self) -> None:
        assert one(make_payload(make_alert(fingerprint=""))).fingerprint

    @pytest.mark.parametrize(
        ("labels", "common", "target"),
        [
            ({"modelcycle": "iris", "namespace": "ml"}, {}, ("ml", "iris")),
            ({"alertname": "x"}, {"modelcycle": "iris", "namespace": "ml"}, ("ml", "iris")),
            ({"modelcycle": "wine"}, {"modelcycle": "iris", "namespace": "ml"}, ("ml", "wine")),
            ({"modelcycle": "iris"}, {}, None),
            ({"namespace": "ml"}, {}, None),
            ({"modelcycle": "", "namespace": "ml"}, {}, None),
            ({"modelcycle": "Iris", "namespace": "ml"}, {}, None),
            ({"modelcycle": "iris", "namespace": "../kube-system"}, {}, None),
            ({"modelcycle": "iris/x", "namespace": "ml"}, {}, None),
            ({"modelcycle": "a" * 64, "namespace": "ml"}, {}, None),
        ],
    )
    def test_routing(
        self, labels: dict[str, str], common: dict[str, str], target: tuple[str, str] | None
    ) -> None:
        alert = one(make_payload(make_alert(labels=labels), commonLabels=common))
        assert alert.target == target

    def test_common_labels_count_for_the_alert(self) -> None:
        alert = one(
            make_payload(make_alert(labels={"alertname": "x"}), commonLabels={"team": "ml"})
        )
        assert alert.labels == {"team": "ml", "alertname": "x"}

    def test_many_alerts_keep_their_order(self) -> None:
        raws = [make_alert(fingerprint=f"f{i}") for i in range(5)]
        _, alerts = parse_payload(make_payload(*raws))
        assert [a.fingerprint for a in alerts] == [f"f{i}" for i in range(5)]

    def test_no_alerts_is_valid(self) -> None:
        assert parse_payload(make_payload(alerts=[]))[1] == []

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("endsAt", None),
            ("annotations", None),
            ("generatorURL", None),
            ("fingerprint", None),
        ],
    )
    def test_optional_alert_fields_may_be_null(self, field: str, value: Any) -> None:
        alert = one(make_payload(make_alert(**{field: value})))
        assert alert.target == ("ml", "iris")

    @pytest.mark.parametrize(
        "field",
        ["groupKey", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
         "truncatedAlerts"],
    )  # fmt: skip
    def test_optional_group_fields_may_be_missing(self, field: str) -> None:
        payload = make_payload()
        del payload[field]
        assert len(parse_payload(payload)[1]) == 1

    def test_long_texts_are_cut(self) -> None:
        alert = one(make_payload(make_alert(annotations={"summary": "x" * (MAX_TEXT + 10)})))
        assert len(alert.annotations["summary"]) == MAX_TEXT

    def test_resolved_group_may_hold_firing_alerts(self) -> None:
        _, alerts = parse_payload(
            make_payload(make_alert(), make_alert(status="resolved"), status="resolved")
        )
        assert [a.status for a in alerts] == ["firing", "resolved"]


def _set(path: str, value: Any) -> dict[str, Any]:
    """A payload with the field at ``path`` (``a.b`` or ``alerts.0.c``) set or deleted."""
    payload = make_payload()
    parts = path.split(".")
    node: Any = payload
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return payload


_DELETE = object()

MALFORMED = [
    # (path, value, fragment of the message)
    ("version", "3", 'version must be "4"'),
    ("version", 4, 'version must be "4"'),
    ("version", _DELETE, 'version must be "4"'),
    ("status", "pending", "status must be"),
    ("status", None, "status must be"),
    ("status", _DELETE, "status must be"),
    ("alerts", {}, "alerts must be a list"),
    ("alerts", None, "alerts must be a list"),
    ("alerts", "x", "alerts must be a list"),
    ("alerts", _DELETE, "alerts must be a list"),
    ("truncatedAlerts", -1, "truncatedAlerts"),
    ("truncatedAlerts", "0", "truncatedAlerts"),
    ("truncatedAlerts", True, "truncatedAlerts"),
    ("truncatedAlerts", 1.5, "truncatedAlerts"),
    ("receiver", 1, "receiver must be a string"),
    ("groupKey", ["x"], "groupKey must be a string"),
    ("externalURL", {}, "externalURL must be a string"),
    ("commonLabels", [], "commonLabels must be an object"),
    ("commonLabels", "x", "commonLabels must be an object"),
    ("commonLabels", {"a": 1}, "commonLabels.a must be a string"),
    ("groupLabels", {"a": None}, "groupLabels.a must be a string"),
    ("commonAnnotations", {"a": []}, "commonAnnotations.a must be a string"),
    ("alerts.0", "x", "alerts[0] must be an object"),
    ("alerts.0", None, "alerts[0] must be an object"),
    ("alerts.0.status", "pending", "alerts[0].status must be"),
    ("alerts.0.status", _DELETE, "alerts[0].status must be"),
    ("alerts.0.labels", [], "alerts[0].labels must be an object"),
    ("alerts.0.labels", {"severity": 3}, "alerts[0].labels.severity must be a string"),
    ("alerts.0.annotations", "x", "alerts[0].annotations must be an object"),
    ("alerts.0.annotations", {"summary": 1}, "alerts[0].annotations.summary must be a string"),
    ("alerts.0.startsAt", _DELETE, "alerts[0].startsAt must be an RFC 3339 time string"),
    ("alerts.0.startsAt", None, "alerts[0].startsAt must be an RFC 3339 time string"),
    ("alerts.0.startsAt", 1733054400, "alerts[0].startsAt must be an RFC 3339 time string"),
    ("alerts.0.startsAt", "yesterday", "alerts[0].startsAt is not an RFC 3339 time"),
    ("alerts.0.startsAt", "2026-12-01T12:00:00", "alerts[0].startsAt is not an RFC 3339 time"),
    ("alerts.0.startsAt", "2026-12-01T12:00:00." + "1" * 60 + "Z", "longer than 64"),
    ("alerts.0.endsAt", "soon", "alerts[0].endsAt is not an RFC 3339 time"),
    ("alerts.0.endsAt", 0, "alerts[0].endsAt must be an RFC 3339 time string"),
    ("alerts.0.fingerprint", 12, "alerts[0].fingerprint must be a string"),
    ("alerts.0.fingerprint", "f" * 129, "alerts[0].fingerprint is longer than 128"),
    ("alerts.0.fingerprint", "ab\ncd", "alerts[0].fingerprint must be printable"),
    ("alerts.0.generatorURL", 5, "alerts[0].generatorURL must be a string"),
]


class TestMalformed:
    @pytest.mark.parametrize(
        ("path", "value", "fragment"),
        MALFORMED,
        ids=[f"{p}={'<deleted>' if v is _DELETE else repr(v)[:20]}" for p, v, _ in MALFORMED],
    )
    def test_field(self, path: str, value: Any, fragment: str) -> None:
        with pytest.raises(PayloadError) as info:
            parse_payload(_set(path, value))
        assert fragment in str(info.value)

    @pytest.mark.parametrize("body", [None, [], "x", 4, [make_payload()]])
    def test_not_an_object(self, body: Any) -> None:
        with pytest.raises(PayloadError, match="payload must be a JSON object"):
            parse_payload(body)

    @pytest.mark.parametrize("labels", [{}, None])
    def test_an_alert_needs_labels(self, labels: Any) -> None:
        with pytest.raises(PayloadError, match=r"alerts\[0\]\.labels must not be empty"):
            parse_payload(make_payload(make_alert(labels=labels), commonLabels={}))

    def test_too_many_alerts(self) -> None:
        with pytest.raises(PayloadError, match=f"at most {MAX_ALERTS}"):
            parse_payload(make_payload(alerts=[make_alert()] * (MAX_ALERTS + 1)))

    def test_too_many_labels(self) -> None:
        labels = {f"l{i}": "v" for i in range(MAX_LABELS + 1)}
        with pytest.raises(PayloadError, match=f"at most {MAX_LABELS}"):
            parse_payload(make_payload(make_alert(labels=labels)))

    def test_names_the_failing_alert(self) -> None:
        with pytest.raises(PayloadError, match=r"alerts\[2\]\.startsAt"):
            parse_payload(make_payload(make_alert(), make_alert(), make_alert(startsAt="x")))

    def test_the_message_is_bounded(self) -> None:
        with pytest.raises(PayloadError) as info:
            parse_payload(_set("alerts.0.labels", {"k" * 10_000: 1}))
        assert len(str(info.value)) < 200


# --- the verdict ------------------------------------------------------------------------


def verdict(alert: Alert | None = None, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "handled_keys": [],
        "last_cycle_start": T0 - datetime.timedelta(hours=1),
        "cooldown_seconds": 300,
        "alerts_enabled": True,
        "match_labels": {},
        "suspended": False,
        "now": T0,
    }
    args.update(kwargs)
    return alert_verdict(alert or one(make_payload()), **args)


class TestVerdict:
    def test_firing_alert_retrains(self) -> None:
        v = verdict()
        assert (v.retrain, v.reason) == (True, "Retrain")
        assert "AccuracyLow" in v.message

    def test_resolved_never_retrains(self) -> None:
        v = verdict(one(make_payload(make_alert(status="resolved"))))
        assert (v.retrain, v.reason) == (False, "Resolved")

    def test_handled_key_is_a_duplicate(self) -> None:
        alert = one(make_payload())
        v = verdict(alert, handled_keys=["other", alert.key])
        assert (v.retrain, v.reason) == (False, "Duplicate")

    def test_same_fingerprint_new_start_is_not_a_duplicate(self) -> None:
        first = one(make_payload())
        again = one(make_payload(make_alert(startsAt="2026-12-01T11:59:30Z")))
        assert verdict(again, handled_keys=[first.key]).retrain

    def test_disabled(self) -> None:
        assert verdict(alerts_enabled=False).reason == "AlertsDisabled"

    @pytest.mark.parametrize(
        ("match", "retrain"),
        [
            ({}, True),
            ({"alertname": "AccuracyLow"}, True),
            ({"severity": "critical"}, False),
            ({"alertname": "Other"}, False),
        ],
    )
    def test_match_labels(self, match: dict[str, str], retrain: bool) -> None:
        v = verdict(match_labels=match)
        assert v.retrain is retrain
        if not retrain:
            assert v.reason == "NotMatched"
            assert next(iter(match)) in v.message

    def test_match_labels_see_common_labels(self) -> None:
        alert = one(make_payload(commonLabels={"severity": "critical"}))
        assert verdict(alert, match_labels={"severity": "critical"}).retrain

    def test_suspended(self) -> None:
        assert verdict(suspended=True).reason == "Suspended"

    @pytest.mark.parametrize(
        ("elapsed", "cooldown", "retrain"),
        [
            (0, 300, False),
            (299, 300, False),
            (299.999, 300, False),
            (300, 300, True),  # exactly the cooldown: allowed again
            (301, 300, True),
            (3600, 300, True),
            (0, 0, True),  # no cooldown
            (-30, 300, False),  # a start in the future (clock skew): still inside
            (-30, 0, True),
        ],
    )
    def test_cooldown_edge(self, elapsed: float, cooldown: int, retrain: bool) -> None:
        start = T0 - datetime.timedelta(seconds=elapsed)
        v = verdict(last_cycle_start=start, cooldown_seconds=cooldown)
        assert v.retrain is retrain
        if not retrain:
            assert v.reason == "Cooldown"
            assert f"cooldown {cooldown} s" in v.message

    def test_no_cycle_yet_means_no_cooldown(self) -> None:
        assert verdict(last_cycle_start=None, cooldown_seconds=604800).retrain

    @pytest.mark.parametrize(
        ("kwargs", "reason"),
        [
            ({"handled_keys": ["*"], "alerts_enabled": False}, "AlertsDisabled"),
            ({"alerts_enabled": False, "suspended": True}, "AlertsDisabled"),
            ({"match_labels": {"x": "y"}, "suspended": True}, "NotMatched"),
            ({"suspended": True, "cooldown_seconds": 10**6}, "Suspended"),
        ],
    )
    def test_order_of_reasons(self, kwargs: dict[str, Any], reason: str) -> None:
        alert = one(make_payload())
        if kwargs.get("handled_keys") == ["*"]:
            kwargs["handled_keys"] = []
        assert verdict(alert, **kwargs).reason == reason

    def test_duplicate_before_everything_but_resolved(self) -> None:
        alert = one(make_payload())
        v = verdict(alert, handled_keys=[alert.key], alerts_enabled=False, suspended=True)
        assert v.reason == "Duplicate"
        resolved = one(make_payload(make_alert(status="resolved")))
        assert verdict(resolved, handled_keys=[resolved.key]).reason == "Resolved"
