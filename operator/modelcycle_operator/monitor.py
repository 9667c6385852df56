"""The built-in monitor: ask the serving replicas how the champion does, set ``Degraded``.

For clusters without Prometheus. :func:`run` is a kopf daemon per ModelCycle with
``spec.monitoring.builtin.enabled`` (kopf stops it when that turns false or the object
goes). Every ``intervalSeconds`` (re-read each round) :func:`check_once`

1. reads the ModelCycle and lists its serving pods
   (``modelcycle.dev/name=<name>,modelcycle.dev/step=serving``) through
   :mod:`modelcycle_operator.api`, in a worker thread;
2. asks each Ready pod of the champion's model version, by pod IP and
   ``spec.serving.port``, for ``GET /v2/models/<name>/monitoring`` (aiohttp, 2 s timeout
   per request, all replicas at once), so kopf's event loop never blocks;
3. lets :func:`modelcycle_operator.pure.health.assess` judge the aggregate and
   :func:`modelcycle_operator.pure.intake.monitor_observed` write ``Degraded`` (and, when
   Degraded and ``retrain`` is true, a pending ``Monitor`` trigger) through
   :func:`modelcycle_operator.reconcile.change_status`;
4. wakes the reconcile when a trigger is pending.

Nothing is checked while there is no champion, or while a cycle is in progress (the
rollout replaces the replicas being asked).

Limits: the operator must reach pod IPs (a NetworkPolicy has to allow it). A replica
that does not answer in time is left out of that round.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from modelcycle_operator import api, reconcile
from modelcycle_operator.pure import health, intake, naming, triggers
from modelcycle_operator.pure.spec import ModelCycle, SpecError

__all__ = ["check_once", "run"]

log = logging.getLogger("modelcycle_operator.monitor")

REQUEST_TIMEOUT = 2.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
Logger = logging.Logger | logging.LoggerAdapter[Any]


async def _fetch(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | str:
    """The decoded summary, or a short reason why not."""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return f"HTTP {response.status}"
            raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
            if len(raw) > MAX_RESPONSE_BYTES:
                return "answer too large"
            data = json.loads(raw)
    except TimeoutError:
        return f"no answer within {REQUEST_TIMEOUT:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except ValueError:
        return "answer is not JSON"
    return data if isinstance(data, dict) else "answer is not a JSON object"


async def check_once(
    namespace: str,
    name: str,
    session: aiohttp.ClientSession,
    logger: Logger | None = None,
) -> int:
    """One round of checks; returns the seconds to wait before the next one."""
    logger = logger or log
    body = await asyncio.to_thread(api.get_modelcycle, namespace, name)
    if body is None:
        return 30
    try:
        mc = ModelCycle.from_body(body)
    except SpecError:
        return 30  # the reconcile reports it
    builtin = mc.spec.monitoring.builtin
    interval = builtin.interval_seconds
    status = body.get("status") or {}
    champion = status.get("champion") if isinstance(status.get("champion"), Mapping) else None
    version = str((champion or {}).get("version") or "")
    if not builtin.enabled or not version or triggers.cycle_in_progress(status):
        return interval
    if not mc.spec.serving.enabled:
        return interval
    selector = naming.selector_string(naming.serving_selector(name))
    pods = await asyncio.to_thread(api.list_pods, namespace, selector)
    ready = [p for p in health.ready_serving_pods(pods) if p.version in ("", version)]
    port = mc.spec.serving.port
    urls = [f"http://{p.ip}:{port}/v2/models/{name}/monitoring" for p in ready]
    answers = await asyncio.gather(*(_fetch(session, url) for url in urls))
    summaries = [a for a in answers if isinstance(a, dict)]
    for pod, answer in zip(ready, answers, strict=True):
        if isinstance(answer, str):
            logger.debug(f"Monitoring of pod {pod.name} ({pod.ip}) failed: {answer}")
    assessment = health.assess(summaries, builtin, version, asked=len(ready))

    def compute(current: Mapping[str, Any], now: datetime.datetime) -> intake.Change:
        return intake.monitor_observed(current, assessment, now)

    change = await asyncio.to_thread(reconcile.change_status, namespace, name, compute, logger)
    if change is not None and change.wake:
        logger.info(f"Built-in monitor: {change.message}")
        await asyncio.to_thread(reconcile.reconcile, namespace, name, logger)
    return interval


async def _sleep(seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return False


async def run(
    namespace: str,
    name: str,
    logger: Logger | None = None,
    pause: Callable[[float], Awaitable[bool]] = _sleep,
) -> None:
    """Check until ``pause`` says to stop (kopf's daemon flag) or the task is cancelled."""
    logger = logger or log
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            interval = 30
            try:
                interval = await check_once(namespace, name, session, logger)
            except asyncio.CancelledError:
                raise
            except (api.ApiError, reconcile.StatusChanging) as exc:
                logger.warning(f"Built-in monitor of {namespace}/{name}: {exc}; trying again")
            except Exception:  # a bug must not end the monitor for good
                logger.exception(f"Built-in monitor of {namespace}/{name} failed")
            if await pause(interval):
                return
