"""The alert receiver: Alertmanager's webhook (version 4) in, pending Alert triggers out.

An aiohttp server that kopf starts in its own event loop (``@kopf.on.startup``) and stops
on cleanup, bound to ``MODELCYCLE_RECEIVER_HOST:MODELCYCLE_RECEIVER_PORT`` (0.0.0.0:8081):

- ``POST /alerts`` — Alertmanager's webhook. Every request passes, in order: a token
  bucket per client IP (429 with ``Retry-After``), the body size cap (413, from
  ``Content-Length`` before anything is read, and while reading a chunked body), the
  bearer token (401; compared with :func:`hmac.compare_digest`), JSON decoding and
  :func:`modelcycle_operator.pure.alerts.parse_payload` (400 with ``{"error": ...}``
  saying what is wrong). Then each alert is routed to its ModelCycle by the labels
  ``modelcycle`` and ``namespace``; the alerts of one ModelCycle are recorded in one
  status write (:func:`modelcycle_operator.pure.intake.take_alerts`: deduplication on
  fingerprint + startsAt, the cooldown, ``triggers.pending``), and the reconcile is woken
  when a cycle was requested. The answer is 202 with one result per alert, in order
  (``Retrain``, ``Pending``, ``Duplicate``, ``Cooldown``, ``Resolved``, ``UnknownTarget``,
  ``Unrouted``, ...); 503 when the Kubernetes API failed for some, so that Alertmanager
  sends the group again (what was recorded deduplicates).
- ``GET /healthz`` — 200 ``{"status": "ok", "tokenConfigured": bool}``.

Without a token (``MODELCYCLE_RECEIVER_TOKEN`` or ``MODELCYCLE_RECEIVER_TOKEN_FILE``)
the receiver is never open: it answers every ``POST /alerts`` with 401 and logs once that
it is unconfigured. The token file is re-read when it changes (a rotated Secret). The
token and the ``Authorization`` header are never logged, returned or written to status.

Limits: bearer tokens only (no basic auth, no TLS: terminate TLS in front of it or keep
it on the cluster network). The client IP is the peer address (``X-Forwarded-For`` is
not trusted). A port that cannot be bound is logged as an error and the operator runs
on without a receiver.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from modelcycle_operator import api, reconcile
from modelcycle_operator.pure import intake
from modelcycle_operator.pure.alerts import Alert, PayloadError, parse_payload
from modelcycle_operator.settings import Settings

__all__ = ["AlertReceiver", "RateLimiter", "TokenSource"]

log = logging.getLogger("modelcycle_operator.receiver")

Target = tuple[str, str]
#: Records the alerts of one ModelCycle; returns None when it does not exist.
Record = Callable[[Target, Sequence[Alert]], Awaitable[intake.Change | None]]
_MAX_CLIENTS = 10_000
_PARALLEL_TARGETS = 4


class TokenSource:
    """The configured bearer token, from the setting or from a file (re-read on change)."""

    def __init__(self, token: str = "", path: str = "") -> None:
        self._token = token
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._from_file = ""
        self._problem = ""

    @property
    def source(self) -> str:
        if self._token:
            return "MODELCYCLE_RECEIVER_TOKEN"
        return f"the file {self._path}" if self._path else "nothing"

    def get(self) -> str:
        """The token, or "" when none is configured (or the file cannot be read)."""
        if self._token or not self._path:
            return self._token
        try:
            st = os.stat(self._path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                with open(self._path, encoding="utf-8") as f:
                    self._from_file = f.read().strip()
                self._stamp = stamp
                self._problem = ""
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
            if problem != self._problem:
                log.error(f"Alert receiver: cannot read the token file {self._path}: {problem}")
                self._problem = problem
            self._from_file, self._stamp = "", None
        return self._from_file


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = _MAX_CLIENTS,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, client: str) -> float:
        """0 when the request may go; else the seconds until the next one may."""
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)  # the longest idle client
        return wait


def _json(status: int, payload: Mapping[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(payload, separators=(",", ":")),
        content_type="application/json",
        headers=headers or None,
    )


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json(status, {"error": message}, **headers)


@dataclasses.dataclass
class _Outcome:
    result: str
    message: str


async def _record_through_reconcile(
    target: Target, alerts: Sequence[Alert]
) -> intake.Change | None:
    namespace, name = target

    def compute(body: Mapping[str, Any], now: Any) -> intake.Change:
        return intake.take_alerts(body, alerts, now)

    return await asyncio.to_thread(reconcile.change_status, namespace, name, compute, log)


class AlertReceiver:
    """The HTTP server; :meth:`start` / :meth:`stop` from kopf's startup and cleanup."""

    def __init__(
        self,
        settings: Settings,
        *,
        record: Record | None = None,
        wake: Callable[[Target], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.tokens = TokenSource(settings.receiver_token, settings.receiver_token_file)
        self.limiter = RateLimiter(settings.receiver_rate, settings.receiver_burst, clock)
        self.record = record or _record_through_reconcile
        self.wake = wake or self._wake_reconcile
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._warned_unconfigured = False
        self.app = web.Application(
            client_max_size=settings.receiver_max_body_bytes,
            middlewares=[self._errors_and_limits],
        )
        self.app.router.add_post("/alerts", self.alerts)
        self.app.router.add_get("/healthz", self.healthz)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> bool:
        """Bind and serve; False (logged) when the address cannot be bound."""
        host, port = self.settings.receiver_host, self.settings.receiver_port
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            log.error(
                f"Alert receiver not started: cannot listen on {host}:{port}: {exc.strerror or exc}"
            )
            return False
        self._runner = runner
        configured = "bearer token from " + self.tokens.source
        if not self.tokens.get():
            configured = "no token configured: every request is refused with 401"
            self._warned_unconfigured = True
        log.info(f"Alert receiver listening on http://{host}:{port}/alerts ({configured})")
        return True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("Alert receiver stopped")

    def _wake_reconcile(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, reconcile.reconcile, target[0], target[1], None)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    # --- the request pipeline -----------------------------------------------------------

    @web.middleware
    async def _errors_and_limits(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/healthz":
            wait = self.limiter.take(request.remote or "unknown")
            if wait > 0:
                return _error(
                    429,
                    "too many requests from this client; retry later",
                    **{"Retry-After": str(max(1, math.ceil(wait)))},
                )
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)

    def _too_large(self) -> web.Response:
        limit = self.settings.receiver_max_body_bytes
        return _error(413, f"request body larger than {limit} bytes")

    def _authorized(self, request: web.Request) -> web.Response | None:
        token = self.tokens.get()
        challenge = {"WWW-Authenticate": 'Bearer realm="modelcycle-alerts"'}
        if not token:
            if not self._warned_unconfigured:
                log.warning(
                    "Alert receiver: no token configured (MODELCYCLE_RECEIVER_TOKEN or "
                    "MODELCYCLE_RECEIVER_TOKEN_FILE); refusing every request with 401"
                )
                self._warned_unconfigured = True
            return _error(401, "the alert receiver has no token configured", **challenge)
        self._warned_unconfigured = False
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _error(
                401, "a bearer token is required (Authorization: Bearer ...)", **challenge
            )
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _error(401, "the bearer token is not valid", **challenge)
        return None

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return _json(200, {"status": "ok", "tokenConfigured": bool(self.tokens.get())})

    async def alerts(self, request: web.Request) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.settings.receiver_max_body_bytes:
            return self._too_large()
        refused = self._authorized(request)
        if refused is not None:
            return refused
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        try:
            _group, alerts = parse_payload(body)
        except PayloadError as exc:
            return _error(400, str(exc))
        outcomes, failed = await self._route(alerts)
        client = request.remote or "unknown"
        summary = ", ".join(
            f"{_target_text(a)} {o.result} ({a.name or a.fingerprint})"
            for a, o in zip(alerts, outcomes, strict=True)
        )
        log.info(f"Alertmanager webhook from {client}: {len(alerts)} alerts: {summary or '-'}")
        results = [
            {
                "alert": a.name,
                "fingerprint": a.fingerprint,
                "startsAt": a.starts_at,
                "status": a.status,
                "modelcycle": _target_text(a) if a.target else None,
                "result": o.result,
                "message": o.message,
            }
            for a, o in zip(alerts, outcomes, strict=True)
        ]
        return _json(503 if failed else 202, {"received": len(alerts), "results": results})

    async def _route(self, alerts: Sequence[Alert]) -> tuple[list[_Outcome], bool]:
        outcomes: list[_Outcome | None] = [None] * len(alerts)
        by_target: dict[Target, list[int]] = {}
        for i, alert in enumerate(alerts):
            if alert.target is None:
                outcomes[i] = _Outcome(
                    "Unrouted",
                    "the alert has no valid modelcycle and namespace labels naming a ModelCycle",
                )
            elif not self.settings.watches(alert.target[0]):
                outcomes[i] = _Outcome(
                    "UnknownTarget", f"namespace {alert.target[0]} is not served by this operator"
                )
                log.warning(f"Alert for {_target_text(alert)}: namespace not served here")
            else:
                by_target.setdefault(alert.target, []).append(i)
        failed = False
        gate = asyncio.Semaphore(_PARALLEL_TARGETS)

        async def one(target: Target, indexes: list[int]) -> None:
            nonlocal failed
            async with gate:
                try:
                    change = await self.record(target, [alerts[i] for i in indexes])
                except (api.ApiError, reconcile.StatusChanging) as exc:
                    failed = True
                    log.error(f"Could not record alerts for {target[0]}/{target[1]}: {exc}")
                    for i in indexes:
                        outcomes[i] = _Outcome("Error", f"could not record the alert: {exc}")
                    return
            if change is None:
                log.warning(
                    f"Alert for unknown ModelCycle {target[0]}/{target[1]} "
                    f"({', '.join(alerts[i].name or alerts[i].fingerprint for i in indexes)})"
                )
                for i in indexes:
                    outcomes[i] = _Outcome(
                        "UnknownTarget", f"no ModelCycle {target[1]} in namespace {target[0]}"
                    )
                return
            for i, result in zip(indexes, change.results, strict=True):
                outcomes[i] = _Outcome(result.result, result.message)
            if change.wake:
                self.wake(target)

        await asyncio.gather(*(one(t, ix) for t, ix in by_target.items()))
        return [o or _Outcome("Error", "not processed") for o in outcomes], failed


def _target_text(alert: Alert) -> str:
    return f"{alert.target[0]}/{alert.target[1]}" if alert.target else "(unrouted)"
