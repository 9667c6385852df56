"""Alertmanager's webhook payload (version 4): validated, routed, deduplicated.

Pure: parses a decoded JSON body into typed alerts, says which ModelCycle each firing
alert is for (by the ``modelcycle`` and ``namespace`` labels, taken from the alert's own
labels, else from the group's common labels), and computes the deduplication key that
Alertmanager's repeats share (fingerprint + startsAt). Whether a routed alert retrains
(cooldown, already handled, alerts disabled) is decided by :func:`alert_verdict`.

Everything wrong with a payload raises :class:`PayloadError` with a message naming the
field, so the receiver can answer 400 with it.

Limits: times must be RFC 3339 (``T`` or space, ``Z`` or a numeric offset, any number
of fractional digits; Alertmanager sends nanoseconds, Python keeps microseconds). A label
value that is not a DNS label cannot name a ModelCycle or a namespace: such an alert is
parsed but unrouted (``target`` None). Texts are cut at :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "Alert",
    "PayloadError",
    "Verdict",
    "alert_verdict",
    "parse_payload",
    "parse_time",
]

#: Alertmanager's "not ended" marker for endsAt.
ZERO_TIME = "0001-01-01T00:00:00Z"
MAX_ALERTS = 1000
MAX_LABELS = 64
MAX_TEXT = 4096
MAX_FINGERPRINT = 128
#: Longest accepted time string: keeps ``fingerprint@startsAt`` within the status schema.
MAX_TIME = 64

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class PayloadError(ValueError):
    """The payload is not Alertmanager's version-4 webhook; the message says where."""


@dataclasses.dataclass(frozen=True)
class Alert:
    status: str  # firing | resolved
    labels: Mapping[str, str]  # the group's common labels, then the alert's own
    annotations: Mapping[str, str]
    starts_at: str
    ends_at: str
    fingerprint: str
    generator_url: str
    target: tuple[str, str] | None  # (namespace, name) of the ModelCycle, or None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def key(self) -> str:
        """The same alert repeated by Alertmanager has the same key."""
        return f"{self.fingerprint}@{self.starts_at}"


def parse_time(value: str) -> datetime.datetime:
    """An RFC 3339 time (nanoseconds cut to microseconds); ValueError otherwise."""
    m = _RFC3339.match(value.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {value[:MAX_TIME]!r}")
    date, clock, frac, zone = m.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    text = f"{date}T{clock}" + (f".{frac[:6].ljust(6, '0')}" if frac else "") + zone
    return datetime.datetime.fromisoformat(text)


def _text(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a string, got {type(value).__name__}")
    return value[:MAX_TEXT]


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object of strings, got {type(value).__name__}")
    if len(value) > MAX_LABELS:
        raise PayloadError(f"{where} has {len(value)} entries; at most {MAX_LABELS}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError(f"{where}.{str(k)[:64]} must be a string, got {type(v).__name__}")
        out[str(k)[:MAX_TEXT]] = v[:MAX_TEXT]
    return out


def _time(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be an RFC 3339 time string")
    if len(value) > MAX_TIME:
        raise PayloadError(f"{where} is longer than {MAX_TIME} characters")
    try:
        parse_time(value)
    except ValueError as exc:
        raise PayloadError(f"{where} is not an RFC 3339 time: {value!r}") from exc
    return value


def _fingerprint(labels: Mapping[str, str]) -> str:
    # Alertmanager always sends one; this covers hand-made payloads without it.
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _target(labels: Mapping[str, str]) -> tuple[str, str] | None:
    name, namespace = labels.get("modelcycle", ""), labels.get("namespace", "")
    if _DNS_LABEL.match(name) and _DNS_LABEL.match(namespace):
        return namespace, name
    return None


def _alert(raw: Any, where: str, common: Mapping[str, str]) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object")
    a_status = raw.get("status")
    if a_status not in ("firing", "resolved"):
        raise PayloadError(f'{where}.status must be "firing" or "resolved", got {a_status!r}')
    own = _str_map(raw.get("labels"), f"{where}.labels")
    labels = {**common, **own}
    if not labels:
        raise PayloadError(f"{where}.labels must not be empty")
    starts = _time(raw.get("startsAt"), f"{where}.startsAt")
    ends_raw = raw.get("endsAt")
    ends = ZERO_TIME if ends_raw is None else _time(ends_raw, f"{where}.endsAt")
    fingerprint = raw.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise PayloadError(f"{where}.fingerprint must be a string")
    if fingerprint and len(fingerprint) > MAX_FINGERPRINT:
        raise PayloadError(f"{where}.fingerprint is longer than {MAX_FINGERPRINT} characters")
    if fingerprint and not fingerprint.isprintable():
        raise PayloadError(f"{where}.fingerprint must be printable")
    return Alert(
        status=a_status,
        labels=labels,
        annotations=_str_map(raw.get("annotations"), f"{where}.annotations"),
        starts_at=starts,
        ends_at=ends,
        fingerprint=fingerprint or _fingerprint(labels),
        generator_url=_text(raw.get("generatorURL"), f"{where}.generatorURL"),
        target=_target(labels),
    )


def parse_payload(body: Any) -> tuple[dict[str, Any], list[Alert]]:
    """Validate a decoded webhook body; return its group fields and its alerts."""
    if not isinstance(body, dict):
        raise PayloadError("payload must be a JSON object")
    version = body.get("version")
    if version != "4":
        raise PayloadError(f'version must be "4" (Alertmanager webhook), got {version!r}')
    status = body.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f'status must be "firing" or "resolved", got {status!r}')
    alerts_raw = body.get("alerts")
    if not isinstance(alerts_raw, list):
        raise PayloadError("alerts must be a list")
    if len(alerts_raw) > MAX_ALERTS:
        raise PayloadError(f"alerts has {len(alerts_raw)} entries; at most {MAX_ALERTS}")
    truncated = body.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError(f"truncatedAlerts must be a non-negative integer, got {truncated!r}")
    common = _str_map(body.get("commonLabels"), "commonLabels")
    group = {
        "receiver": _text(body.get("receiver"), "receiver"),
        "groupKey": _text(body.get("groupKey"), "groupKey"),
        "status": status,
        "truncatedAlerts": truncated,
        "commonLabels": common,
        "groupLabels": _str_map(body.get("groupLabels"), "groupLabels"),
        "commonAnnotations": _str_map(body.get("commonAnnotations"), "commonAnnotations"),
        "externalURL": _text(body.get("externalURL"), "externalURL"),
    }
    alerts = [_alert(raw, f"alerts[{i}]", common) for i, raw in enumerate(alerts_raw)]
    return group, alerts


@dataclasses.dataclass(frozen=True)
class Verdict:
    retrain: bool
    # Retrain | Resolved | Duplicate | AlertsDisabled | NotMatched | Suspended | Cooldown
    reason: str
    message: str


def alert_verdict(
    alert: Alert,
    *,
    handled_keys: Sequence[str],
    last_cycle_start: datetime.datetime | None,
    cooldown_seconds: int,
    alerts_enabled: bool,
    match_labels: Mapping[str, str],
    suspended: bool,
    now: datetime.datetime,
) -> Verdict:
    """Whether this routed alert starts a new cycle, and why (or why not)."""
    label = alert.name or alert.fingerprint
    if alert.status == "resolved":
        return Verdict(False, "Resolved", f"alert {label} resolved")
    if alert.key in handled_keys:
        return Verdict(
            False, "Duplicate", f"alert {label} (started {alert.starts_at}) already handled"
        )
    if not alerts_enabled:
        return Verdict(
            False, "AlertsDisabled", f"alert {label}: spec.monitoring.alerts.enabled is false"
        )
    for k, v in sorted(match_labels.items()):
        if alert.labels.get(k) != v:
            return Verdict(
                False,
                "NotMatched",
                f"alert {label}: label {k}={v!r} required by spec.monitoring.alerts.matchLabels",
            )
    if suspended:
        return Verdict(False, "Suspended", f"alert {label}: the ModelCycle is suspended")
    if last_cycle_start is not None and cooldown_seconds > 0:
        elapsed = (now - last_cycle_start).total_seconds()
        if elapsed < cooldown_seconds:
            return Verdict(
                False,
                "Cooldown",
                f"alert {label} inside the cooldown: the last cycle started "
                f"{max(elapsed, 0):.0f} s ago, cooldown {cooldown_seconds} s",
            )
    return Verdict(True, "Retrain", f"alert {label} firing since {alert.starts_at}")
