"""Alertmanager's webhook payload (version 4): validated, routed, deduplicated.

Pure: parses a decoded JSON body into typed alerts, says which ModelCycle each firing
alert is for (by the ``modelcycle`` and ``namespace`` labels, taken from the alert's own
labels, else from the group's common labels), and computes the deduplication key that
Alertmanager's repeats share (fingerprint + startsAt). Whether a routed alert retrains
(cooldown, already handled, alerts disabled) is decided by :func:`alert_verdict`.

Everything wrong with a payload raises :class:`PayloadError` with a message naming the
field, so the receiver can answer 400 with it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
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


class PayloadError(ValueError):
    """The payload is not Alertmanager's version-4 webhook; the message says where."""


@dataclasses.dataclass(frozen=True)
class Alert:
    status: str  # firing | resolved
    labels: Mapping[str, str]
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
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Alertmanager sends nanoseconds; Python takes microseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        frac = ""
        while rest and rest[0].isdigit():
            frac, rest = frac + rest[0], rest[1:]
        text = f"{head}.{frac[:6]}{rest}" if frac else head + rest
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed


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
            raise PayloadError(f"{where}.{k} must be a string, got {type(v).__name__}")
        out[str(k)[:MAX_TEXT]] = v[:MAX_TEXT]
    return out


def _time(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be an RFC 3339 time string")
    try:
        parse_time(value)
    except ValueError as exc:
        raise PayloadError(f"{where} is not an RFC 3339 time: {value[:64]!r}") from exc
    return value


def _fingerprint(labels: Mapping[str, str]) -> str:
    # Alertmanager always sends one; this covers hand-made payloads without it.
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    common = _str_map(body.get("commonLabels"), "commonLabels")
    group = {
        "receiver": str(body.get("receiver", ""))[:MAX_TEXT],
        "groupKey": str(body.get("groupKey", ""))[:MAX_TEXT],
        "status": status,
        "commonLabels": common,
        "groupLabels": _str_map(body.get("groupLabels"), "groupLabels"),
        "externalURL": str(body.get("externalURL", ""))[:MAX_TEXT],
    }
    alerts: list[Alert] = []
    for i, raw in enumerate(alerts_raw):
        where = f"alerts[{i}]"
        if not isinstance(raw, dict):
            raise PayloadError(f"{where} must be an object")
        a_status = raw.get("status")
        if a_status not in ("firing", "resolved"):
            raise PayloadError(f'{where}.status must be "firing" or "resolved", got {a_status!r}')
        labels = _str_map(raw.get("labels"), f"{where}.labels")
        if not labels:
            raise PayloadError(f"{where}.labels must not be empty")
        starts = _time(raw.get("startsAt"), f"{where}.startsAt")
        ends = _time(raw.get("endsAt", ZERO_TIME), f"{where}.endsAt")
        fingerprint = raw.get("fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise PayloadError(f"{where}.fingerprint must be a string")
        merged = {**common, **labels}
        name, namespace = merged.get("modelcycle"), merged.get("namespace")
        alerts.append(Alert(
            status=a_status, labels=labels,
            annotations=_str_map(raw.get("annotations"), f"{where}.annotations"),
            starts_at=starts, ends_at=ends,
            fingerprint=(fingerprint or _fingerprint(labels))[:128],
            generator_url=str(raw.get("generatorURL", ""))[:MAX_TEXT],
            target=(namespace, name) if name and namespace else None,
        ))
    return group, alerts


@dataclasses.dataclass(frozen=True)
class Verdict:
    retrain: bool
    reason: str  # Retrain | Resolved | Duplicate | Cooldown | AlertsDisabled | Suspended
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
        return Verdict(False, "Duplicate", f"alert {label} (started {alert.starts_at}) "
                                           "already handled")
    if not alerts_enabled:
        return Verdict(False, "AlertsDisabled", f"alert {label}: spec.monitoring.alerts "
                                                "is disabled")
    for k, v in match_labels.items():
        if alert.labels.get(k) != v:
            return Verdict(False, "NotMatched", f"alert {label}: label {k}={v!r} required "
                                                "by spec.monitoring.alerts.matchLabels")
    if suspended:
        return Verdict(False, "Suspended", f"alert {label}: the ModelCycle is suspended")
    if last_cycle_start is not None and cooldown_seconds > 0:
        elapsed = (now - last_cycle_start).total_seconds()
        if elapsed < cooldown_seconds:
            return Verdict(False, "Cooldown", f"alert {label} inside the cooldown: last cycle "
                                              f"started {elapsed:.0f}s ago, cooldown "
                                              f"{cooldown_seconds}s")
    return Verdict(True, "Retrain", f"alert {label} firing since {alert.starts_at}")
