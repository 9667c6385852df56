"""Operator settings, read once from the environment (``MODELCYCLE_*``) or a YAML file.

Purpose: one frozen, validated value that the rest of the operator receives explicitly.
Every variable has a default, so an operator started with an empty environment works.

=====================================  ==========================================================
variable                               meaning
=====================================  ==========================================================
``MODELCYCLE_NAMESPACES``              comma-separated namespaces to serve; empty: cluster-wide
``MODELCYCLE_IMAGE``                   default workload image (``ghcr.io/modelcycle/trainer:0.1.0``)
``MODELCYCLE_ALLOWED_ESTIMATOR_MODULES``  comma-separated top-level modules estimators may come from
``MODELCYCLE_DEFAULT_CPU_REQUEST``     CPU request of workload containers without their own
``MODELCYCLE_DEFAULT_MEMORY_REQUEST``  memory request, likewise
``MODELCYCLE_DEFAULT_CPU_LIMIT``       CPU limit (empty: none)
``MODELCYCLE_DEFAULT_MEMORY_LIMIT``    memory limit (empty: none)
``MODELCYCLE_TIMER_SECONDS``           resync interval while a cycle moves (default 10)
``MODELCYCLE_IDLE_RESYNC_SECONDS``     resync interval of idle ModelCycles (default: 30 timer
                                       intervals, at least 300)
``MODELCYCLE_MAX_WORKERS``             threads for the sync handlers (default 8)
``MODELCYCLE_PREFIX``                  prefix of kopf's own annotations and finalizer
``MODELCYCLE_RECEIVER_HOST``           address the alert receiver binds (default 0.0.0.0)
``MODELCYCLE_RECEIVER_PORT``           its port (default 8081; 0 turns the receiver off)
``MODELCYCLE_RECEIVER_TOKEN``          bearer token Alertmanager must send (never logged)
``MODELCYCLE_RECEIVER_TOKEN_FILE``     or a file holding it (a mounted Secret; re-read
                                       when it changes). Neither: every request gets 401
``MODELCYCLE_RECEIVER_RATE``           requests per second per client IP (default 5)
``MODELCYCLE_RECEIVER_BURST``          burst above that rate (default 20)
``MODELCYCLE_RECEIVER_MAX_BODY_BYTES`` largest accepted webhook body (default 1 MiB)
``MODELCYCLE_CONFIG``                  optional YAML file whose keys (the field names below)
                                       override the variables
=====================================  ==========================================================

Limits: no I/O except reading the environment and the optional file in :func:`load_settings`;
importing this module reads nothing. The prefix applies to kopf's bookkeeping only: the
labels and annotations the operator puts on children (``modelcycle.dev/...``) are part of the
API contract in ``docs/architecture.md`` and do not move with it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Settings", "SettingsError", "load_settings"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e\d+)?$")
_IMAGE = re.compile(r"^[^\s]+$")


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable and what is accepted."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The operator's configuration. Build it with :func:`load_settings`."""

    namespaces: tuple[str, ...] = ()
    image: str = "ghcr.io/modelcycle/trainer:0.1.0"
    allowed_estimator_modules: tuple[str, ...] = ("sklearn",)
    default_cpu_request: str = "100m"
    default_memory_request: str = "256Mi"
    default_cpu_limit: str = ""
    default_memory_limit: str = "2Gi"
    timer_seconds: float = 10.0
    idle_resync_seconds: float = 0.0  # 0: max(300, 30 * timer_seconds)
    max_workers: int = 8
    prefix: str = "modelcycle.dev"
    receiver_host: str = "0.0.0.0"
    receiver_port: int = 8081
    receiver_token: str = dataclasses.field(default="", repr=False)
    receiver_token_file: str = ""
    receiver_rate: float = 5.0
    receiver_burst: int = 20
    receiver_max_body_bytes: int = 1024 * 1024

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def watches(self, namespace: str | None) -> bool:
        """Whether objects in ``namespace`` belong to this operator (cluster-wide: all)."""
        return self.clusterwide or (namespace or "") in self.namespaces

    @property
    def idle_resync(self) -> float:
        """Seconds between resyncs of an idle ModelCycle (the watches cover the rest)."""
        return self.idle_resync_seconds or max(300.0, 30 * self.timer_seconds)

    @property
    def allowed_modules_arg(self) -> str:
        return ",".join(self.allowed_estimator_modules)

    def default_resources(self) -> dict[str, dict[str, str]]:
        """Requests and limits for workload containers that bring none of their own."""
        requests = {
            k: v
            for k, v in (("cpu", self.default_cpu_request), ("memory", self.default_memory_request))
            if v
        }
        limits = {
            k: v
            for k, v in (("cpu", self.default_cpu_limit), ("memory", self.default_memory_limit))
            if v
        }
        resources: dict[str, dict[str, str]] = {}
        if requests:
            resources["requests"] = requests
        if limits:
            resources["limits"] = limits
        return resources


_FIELDS = {f.name for f in dataclasses.fields(Settings)}
_ENV = {
    "namespaces": "MODELCYCLE_NAMESPACES",
    "image": "MODELCYCLE_IMAGE",
    "allowed_estimator_modules": "MODELCYCLE_ALLOWED_ESTIMATOR_MODULES",
    "default_cpu_request": "MODELCYCLE_DEFAULT_CPU_REQUEST",
    "default_memory_request": "MODELCYCLE_DEFAULT_MEMORY_REQUEST",
    "default_cpu_limit": "MODELCYCLE_DEFAULT_CPU_LIMIT",
    "default_memory_limit": "MODELCYCLE_DEFAULT_MEMORY_LIMIT",
    "timer_seconds": "MODELCYCLE_TIMER_SECONDS",
    "idle_resync_seconds": "MODELCYCLE_IDLE_RESYNC_SECONDS",
    "max_workers": "MODELCYCLE_MAX_WORKERS",
    "prefix": "MODELCYCLE_PREFIX",
    "receiver_host": "MODELCYCLE_RECEIVER_HOST",
    "receiver_port": "MODELCYCLE_RECEIVER_PORT",
    "receiver_token": "MODELCYCLE_RECEIVER_TOKEN",
    "receiver_token_file": "MODELCYCLE_RECEIVER_TOKEN_FILE",
    "receiver_rate": "MODELCYCLE_RECEIVER_RATE",
    "receiver_burst": "MODELCYCLE_RECEIVER_BURST",
    "receiver_max_body_bytes": "MODELCYCLE_RECEIVER_MAX_BODY_BYTES",
}
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]_-]{1,253}$")


def _split(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, list | tuple):
        if not all(isinstance(p, str) for p in value):
            raise SettingsError(f"{where}: expected a list of strings, got {value!r}")
        items = [p.strip() for p in value]
    else:
        raise SettingsError(f"{where}: expected a comma-separated string or a list, got {value!r}")
    return tuple(dict.fromkeys(p for p in items if p))


def _validate(raw: Mapping[str, Any], where: Mapping[str, str]) -> Settings:
    kwargs: dict[str, Any] = {}
    if "namespaces" in raw:
        namespaces = _split(raw["namespaces"], where["namespaces"])
        for ns in namespaces:
            if not _DNS_LABEL.match(ns):
                raise SettingsError(f"{where['namespaces']}: {ns!r} is not a valid namespace name")
        kwargs["namespaces"] = namespaces
    if "image" in raw:
        image = raw["image"]
        if not isinstance(image, str) or not _IMAGE.match(image.strip()):
            raise SettingsError(f"{where['image']}: expected an image reference, got {image!r}")
        kwargs["image"] = image.strip()
    if "allowed_estimator_modules" in raw:
        key = where["allowed_estimator_modules"]
        modules = _split(raw["allowed_estimator_modules"], key)
        if not modules:
            raise SettingsError(f"{key}: at least one module is required (e.g. 'sklearn')")
        for module in modules:
            if not _MODULE.match(module):
                raise SettingsError(f"{key}: {module!r} is not a Python module path")
        kwargs["allowed_estimator_modules"] = modules
    for name in (
        "default_cpu_request",
        "default_memory_request",
        "default_cpu_limit",
        "default_memory_limit",
    ):
        if name in raw:
            value = raw[name]
            value = "" if value is None else str(value).strip()
            if value and not _QUANTITY.match(value):
                raise SettingsError(
                    f"{where[name]}: {value!r} is not a Kubernetes quantity (e.g. 100m, 256Mi)"
                )
            kwargs[name] = value
    if "timer_seconds" in raw:
        value = raw["timer_seconds"]
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise SettingsError(
                f"{where['timer_seconds']}: expected a number of seconds, got {value!r}"
            ) from None
        if not 1.0 <= seconds <= 3600.0:
            raise SettingsError(f"{where['timer_seconds']}: must be within 1..3600, got {seconds}")
        kwargs["timer_seconds"] = seconds
    if "idle_resync_seconds" in raw:
        kwargs["idle_resync_seconds"] = _number(
            raw, "idle_resync_seconds", where["idle_resync_seconds"], 1.0, 86400.0
        )
    if "max_workers" in raw:
        kwargs["max_workers"] = _integer(raw, "max_workers", where["max_workers"], 1, 256)
    if "prefix" in raw:
        prefix = raw["prefix"]
        if not isinstance(prefix, str) or not _DNS_SUBDOMAIN.match(prefix) or len(prefix) > 200:
            raise SettingsError(f"{where['prefix']}: expected a DNS subdomain, got {prefix!r}")
        kwargs["prefix"] = prefix
    kwargs.update(_validate_receiver(raw, where))
    return Settings(**kwargs)


def _number(raw: Mapping[str, Any], name: str, where: str, lo: float, hi: float) -> float:
    value = raw[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: expected a number, got {value!r}") from None
    if not lo <= number <= hi:
        raise SettingsError(f"{where}: must be within {lo:g}..{hi:g}, got {value!r}")
    return number


def _integer(raw: Mapping[str, Any], name: str, where: str, lo: int, hi: int) -> int:
    value = raw[name]
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{where}: expected an integer, got {value!r}") from None
    if not lo <= number <= hi:
        raise SettingsError(f"{where}: must be within {lo}..{hi}, got {value!r}")
    return number


def _validate_receiver(raw: Mapping[str, Any], where: Mapping[str, str]) -> dict[str, Any]:
    """The alert receiver's settings; the token's value never appears in a message."""
    kwargs: dict[str, Any] = {}
    if "receiver_host" in raw:
        host = str(raw["receiver_host"] or "").strip()
        if not _HOST.match(host):
            raise SettingsError(
                f"{where['receiver_host']}: expected an address to bind, got {host!r}"
            )
        kwargs["receiver_host"] = host
    if "receiver_port" in raw:
        kwargs["receiver_port"] = _integer(raw, "receiver_port", where["receiver_port"], 0, 65535)
    for name in ("receiver_token", "receiver_token_file"):
        if name in raw:
            value = raw[name]
            if value is not None and not isinstance(value, str):
                raise SettingsError(f"{where[name]}: expected a string")
            kwargs[name] = (value or "").strip()
    if kwargs.get("receiver_token") and kwargs.get("receiver_token_file"):
        raise SettingsError(
            f"{where['receiver_token']} and {where['receiver_token_file']}: set one of them, "
            "not both"
        )
    if "receiver_rate" in raw:
        kwargs["receiver_rate"] = _number(
            raw, "receiver_rate", where["receiver_rate"], 0.01, 100000.0
        )
    if "receiver_burst" in raw:
        kwargs["receiver_burst"] = _integer(
            raw, "receiver_burst", where["receiver_burst"], 1, 100000
        )
    if "receiver_max_body_bytes" in raw:
        kwargs["receiver_max_body_bytes"] = _integer(
            raw,
            "receiver_max_body_bytes",
            where["receiver_max_body_bytes"],
            1024,
            64 * 1024 * 1024,
        )
    return kwargs


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment, then the ``MODELCYCLE_CONFIG`` file on top; raise SettingsError."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    where: dict[str, str] = dict(_ENV)
    for name, var in _ENV.items():
        if var in env:
            raw[name] = env[var]
    config_path = env.get("MODELCYCLE_CONFIG", "").strip()
    if config_path:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"MODELCYCLE_CONFIG: cannot read {config_path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"MODELCYCLE_CONFIG: {config_path} is not YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"MODELCYCLE_CONFIG: {config_path} must hold a mapping")
        unknown = sorted(set(map(str, loaded)) - _FIELDS)
        if unknown:
            raise SettingsError(
                f"MODELCYCLE_CONFIG: unknown keys {unknown} in {config_path}; "
                f"known: {sorted(_FIELDS)}"
            )
        for key, value in loaded.items():
            raw[key] = value
            where[key] = f"{config_path}: {key}"
    return _validate(raw, where)
