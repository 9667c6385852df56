"""The alert receiver fuzzed: its pure parser and its aiohttp app.

1. ``pure.alerts.parse_payload`` on 10,000 hypothesis-generated bodies (Alertmanager-shaped
   payloads with every field mutated, and arbitrary JSON): it returns a valid result or
   raises ``PayloadError`` with a message; never another exception.
2. The receiver's aiohttp app in-process (TestServer/TestClient inside ``asyncio.run``):
   10,000 seeded requests (valid and mutated webhooks, random JSON, truncated and random
   bodies, bodies over the limit, every kind of Authorization header, random paths and
   methods). The status write goes to an in-memory ModelCycle through the real
   ``pure.intake.take_alerts``. No answer is a 5xx, every 4xx is JSON with an ``error``.
3. The gates on their own: no token configured, the rate limit, a body over the limit
   refused from its Content-Length before a byte of it is read.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcycle_operator.pure import intake
from modelcycle_operator.pure.alerts import Alert, PayloadError, parse_payload
from modelcycle_operator.receiver import AlertReceiver
from modelcycle_operator.settings import Settings

Client: TypeAlias = "TestClient[web.Request, web.Application]"

N_EXAMPLES = 10_000
N_REQUESTS = 10_000
TIME_BUDGET_SECONDS = 120.0
SEED = 20261201
TOKEN = "fuzz-token-0123456789"
MAX_BODY = 64 * 1024
TARGET = ("ml", "iris")


# --- 1. the parser ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # json.loads accepts NaN and Infinity, so the receiver can see them
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
# RFC 3339 times built from parts (cheaper than st.datetimes), every part sometimes wrong.
times = st.one_of(
    st.builds(
        "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
        st.integers(0, 10000),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 60),
        st.integers(0, 61),
        st.sampled_from(["", ".1", ".123456", ".123456789", ".", ".1234567890123"]),
        st.sampled_from(["Z", "+00:00", "-05:30", "+99:00", "", "z", "+0100"]),
    ),
    st.sampled_from(["0001-01-01T00:00:00Z", "2026-12-01T12:00:00.123456789Z", ".", "Z", ""]),
    st.text(max_size=30),
    json_values,
)
label_keys = st.sampled_from(["alertname", "modelcycle", "namespace", "severity"]) | st.text(
    max_size=8
)
labels = st.dictionaries(
    label_keys, st.sampled_from(["iris", "ml", "Degraded", ""]) | st.text(max_size=10), max_size=6
) | st.one_of(json_values, st.dictionaries(label_keys, json_values, max_size=3))
statuses = st.sampled_from(["firing", "resolved"]) | json_values
scalars = st.text(max_size=8) | st.integers() | st.none() | st.lists(st.integers(), max_size=2)
alerts = st.fixed_dictionaries(
    {"status": statuses, "labels": labels, "startsAt": times},
    optional={
        "endsAt": times,
        "annotations": labels,
        "fingerprint": st.text(max_size=20) | scalars,
        "generatorURL": scalars,
    },
)
payloads = st.fixed_dictionaries(
    {
        "version": st.just("4") | json_values,
        "status": statuses,
        "alerts": st.lists(alerts, max_size=4) | json_values,
    },
    optional={
        "commonLabels": labels,
        "groupLabels": labels,
        "receiver": scalars,
        "groupKey": scalars,
        "externalURL": scalars,
    },
)


@settings(
    max_examples=N_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.one_of(payloads, payloads, payloads, json_values))
def test_parse_payload_returns_or_says_what_is_wrong(body: Any) -> None:
    refused: PayloadError | None = None
    try:
        group, parsed = parse_payload(body)
    except PayloadError as exc:
        refused = exc
    if refused is not None:
        assert str(refused).strip(), f"PayloadError without a message for {body!r}"
        return
    assert group["status"] in ("firing", "resolved")
    assert isinstance(parsed, list)
    assert len(parsed) == len(body["alerts"])
    for alert in parsed:
        assert alert.status in ("firing", "resolved")
        assert alert.labels
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in alert.labels.items())
        assert alert.key.endswith(f"@{alert.starts_at}")
        assert alert.fingerprint
        if alert.target is not None:
            namespace, name = alert.target
            assert namespace
            assert name


# --- 2. the app ---------------------------------------------------------------------------


def _modelcycle() -> dict[str, Any]:
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    return {
        "apiVersion": "modelcycle.dev/v1alpha1",
        "kind": "ModelCycle",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {
            "data": {"builtin": {"name": "iris"}},
            "evaluation": {"metric": "accuracy", "threshold": 0.8},
            "monitoring": {"cooldownSeconds": 0},
        },
        "status": {
            "cycle": 1,
            "step": "Serving",
            "observedGeneration": 1,
            "lastTrigger": {"type": "Created", "time": started.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "triggers": {"handledGeneration": 1},
        },
    }


class FakeCluster:
    """Plays the status write: one ModelCycle in memory, changed by the real intake."""

    def __init__(self) -> None:
        self.bodies = {TARGET: _modelcycle()}
        self.recorded = 0
        self.woken = 0

    async def record(self, target: tuple[str, str], batch: Sequence[Alert]) -> Any:
        body = self.bodies.get(target)
        if body is None:
            return None
        change = intake.take_alerts(body, batch, datetime.datetime.now(datetime.UTC))
        body["status"] = change.status
        # The reconcile would start the cycle and finish it; keep the target open.
        body["status"].get("triggers", {}).pop("pending", None)
        self.recorded += len(batch)
        return change

    def wake(self, target: tuple[str, str]) -> None:
        self.woken += 1


def _settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "receiver_token": TOKEN,
        "receiver_rate": 1e9,
        "receiver_burst": 10**9,
        "receiver_max_body_bytes": MAX_BODY,
        "receiver_host": "127.0.0.1",
        "receiver_port": 0,
    }
    base.update(kw)
    return Settings(**base)


def _receiver(**kw: Any) -> tuple[AlertReceiver, FakeCluster]:
    cluster = FakeCluster()
    return AlertReceiver(_settings(**kw), record=cluster.record, wake=cluster.wake), cluster


def _run(receiver: AlertReceiver, scenario: Any) -> Any:
    async def go() -> Any:
        async with TestClient(TestServer(receiver.app)) as client:
            return await scenario(client)

    return asyncio.run(go())


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def text(self, n: int = 12) -> str:
        alphabet = string.printable + "é\u2603\x00"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, n)))

    def header_text(self) -> str:
        alphabet = string.ascii_letters + string.digits + string.punctuation + " "
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, 40)))

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randint(0, 6 if depth < 3 else 3)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([0, -1, 2**64, 1.5, float("nan"), True, "4"])
        if kind in (2, 3):
            return self.text()
        if kind == 4:
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.text(6): self.value(depth + 1) for _ in range(r.randint(0, 4))}

    def time(self) -> Any:
        r = self.rng
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=r.randint(0, 9999))
        if r.random() < 0.9:
            return r.choice(
                [
                    now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    now.isoformat(),
                    now.strftime("%Y-%m-%dT%H:%M:%S.%f123Z"),  # nanoseconds, as Alertmanager
                    "2026-12-01T12:00:00.123456789Z",
                ]
            )
        return r.choice(["yesterday", "0001-01-01T00:00:00Z", self.value()])

    def alert(self) -> Any:
        r = self.rng
        self.n += 1
        target = r.choice(
            [
                {"modelcycle": "iris", "namespace": "ml"},
                {"modelcycle": "other", "namespace": "ml"},
                {"modelcycle": "iris"},
                {},
            ]
        )
        alert: dict[str, Any] = {
            "status": r.choice(["firing", "firing", "resolved"]),
            "labels": {"alertname": f"A{r.randint(0, 20)}", **target},
            "annotations": {"summary": self.text(40)},
            "startsAt": self.time(),
            "endsAt": r.choice(["0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", self.time()]),
            "fingerprint": r.choice([f"fp{self.n}", f"fp{r.randint(0, 30)}", self.value()]),
            "generatorURL": "http://prometheus/graph",
        }
        for key in list(alert):
            if r.random() < 0.02:
                del alert[key]
            elif r.random() < 0.02:
                alert[key] = self.value()
        return alert

    def payload(self) -> Any:
        r = self.rng
        body: dict[str, Any] = {
            "version": "4" if r.random() < 0.9 else r.choice(["3", 4, None]),
            "groupKey": self.text(),
            "status": r.choice(["firing", "firing", "resolved", "x"]),
            "receiver": "modelcycle",
            "groupLabels": {"alertname": "A"},
            "commonLabels": r.choice([{}, {"namespace": "ml"}, {"severity": "page"}]),
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": [self.alert() for _ in range(r.choice([0, 1, 1, 2, 5]))],
        }
        for key in list(body):
            if r.random() < 0.01:
                del body[key]
            elif r.random() < 0.01:
                body[key] = self.value()
        return body

    def auth(self) -> dict[str, str]:
        r = self.rng
        if r.random() < 0.85:
            return {"Authorization": f"Bearer {TOKEN}"}
        return r.choice(
            [
                {},
                {"Authorization": "Bearer "},
                {"Authorization": f"bearer {TOKEN}"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Authorization": "Bearer " + self.header_text()},
                {"Authorization": TOKEN},
            ]
        )

    def request(self) -> tuple[str, str, dict[str, str], bytes]:
        r = self.rng
        kind = r.randint(0, 99)
        headers = {"Content-Type": "application/json", **self.auth()}
        if kind < 50:
            body = json.dumps(self.payload()).encode()
            return "POST", "/alerts", headers, body
        if kind < 60:
            return "POST", "/alerts", headers, json.dumps(self.value()).encode()
        if kind < 70:
            body = json.dumps(self.payload()).encode()
            return "POST", "/alerts", headers, body[: r.randrange(len(body) + 1)]
        if kind < 76:
            body = bytes(r.randrange(256) for _ in range(r.randint(0, 200)))
            return "POST", "/alerts", headers, body
        if kind < 80:
            body = json.dumps({"version": "4", "x": "a" * (MAX_BODY + r.randint(1, 999))}).encode()
            return "POST", "/alerts", headers, body
        if kind < 88:
            headers["Content-Type"] = r.choice(
                ["text/plain", "", "application/x-www-form-urlencoded"]
            )
            return "POST", "/alerts", headers, json.dumps(self.payload()).encode()
        method = r.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST", "HEAD"])
        path = r.choice(["/alerts", "/healthz", "/", "/alerts/", "/api/v2/alerts", "/" + "x" * 300])
        return method, path, headers, json.dumps(self.value()).encode()


async def _check(
    client: Client, method: str, path: str, headers: dict[str, str], body: bytes
) -> int:
    resp = await client.request(method, path, headers=headers, data=body or None)
    raw = await resp.read()
    what = f"{method} {path[:80]} {headers.get('Authorization', '-')[:30]!r} {body[:200]!r}"
    assert resp.status < 500, f"{resp.status} for {what}: {raw[:300]!r}"
    if method == "HEAD":
        return resp.status
    if resp.status >= 400:
        assert resp.content_type == "application/json", f"{resp.content_type} for {what}"
        error = json.loads(raw).get("error")
        assert isinstance(error, str), f"no error for {what}: {raw[:300]!r}"
        assert error.strip(), f"empty error for {what}"
    if resp.status == 202:
        answer = json.loads(raw)
        assert answer["received"] == len(answer["results"])
        assert all(r["result"] and r["message"] for r in answer["results"])
    return resp.status


def test_ten_thousand_random_requests_to_the_receiver_get_no_5xx() -> None:
    receiver, cluster = _receiver()
    fuzzer = Fuzzer(SEED)
    seen: Counter[int] = Counter()

    async def scenario(client: Client) -> float:
        started = time.monotonic()
        for _ in range(N_REQUESTS):
            seen[await _check(client, *fuzzer.request())] += 1
        elapsed = time.monotonic() - started
        resp = await client.get("/healthz")
        assert (await resp.json()) == {"status": "ok", "tokenConfigured": True}
        return elapsed

    elapsed = _run(receiver, scenario)
    assert elapsed < TIME_BUDGET_SECONDS, f"{N_REQUESTS} requests took {elapsed:.0f} s"
    for status in (202, 400, 401, 404, 405, 413):
        assert seen[status] > 0, seen
    assert seen[202] > N_REQUESTS // 10, seen
    assert cluster.recorded > 0
    assert cluster.woken > 0
    print(
        f"receiver fuzz: {N_REQUESTS} requests in {elapsed:.1f} s: {dict(sorted(seen.items()))};"
        f" {cluster.recorded} alerts recorded, {cluster.woken} wake-ups"
    )


# --- 3. the gates -------------------------------------------------------------------------

VALID = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "Degraded", "modelcycle": "iris", "namespace": "ml"},
            "startsAt": "2026-12-01T12:00:00Z",
        }
    ],
}


def test_without_a_token_every_request_is_refused() -> None:
    receiver, cluster = _receiver(receiver_token="")

    async def scenario(client: Client) -> list[int]:
        out = []
        for auth in ("", "Bearer ", f"Bearer {TOKEN}", "Bearer x"):
            headers = {"Authorization": auth} if auth else {}
            out.append(await _check(client, "POST", "/alerts", headers, json.dumps(VALID).encode()))
        return out

    assert _run(receiver, scenario) == [401] * 4
    assert cluster.recorded == 0


def test_a_client_over_the_rate_limit_gets_429_with_retry_after() -> None:
    receiver, _ = _receiver(receiver_rate=1.0, receiver_burst=5)

    async def scenario(client: Client) -> tuple[list[int], str | None]:
        out = []
        retry = None
        for _ in range(8):
            resp = await client.post(
                "/alerts", json=VALID, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            out.append(resp.status)
            if resp.status == 429:
                retry = resp.headers.get("Retry-After")
                assert (await resp.json())["error"]
        return out, retry

    statuses, retry = _run(receiver, scenario)
    assert statuses[:5] == [202] * 5
    assert set(statuses[5:]) == {429}
    assert retry is not None
    assert int(retry) >= 1


def test_a_body_over_the_limit_is_refused_from_its_length_before_it_is_read() -> None:
    receiver, cluster = _receiver()

    async def scenario(client: Client) -> tuple[int, bytes, float]:
        host, port = client.server.host, client.server.port
        reader, writer = await asyncio.open_connection(host, port)
        started = time.monotonic()
        writer.write(
            b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {10**9}\r\n\r\n".encode()
            + b'{"version": "4"'  # and nothing more: the rest of the gigabyte never comes
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        took = time.monotonic() - started
        writer.close()
        return int(answer.split(b" ", 2)[1]), answer, took

    status, answer, took = _run(receiver, scenario)
    assert status == 413, answer
    assert b"request body larger than" in answer
    assert took < 5
    assert cluster.recorded == 0


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read() -> None:
    receiver, cluster = _receiver()
    sent = 0
    total = 64 * MAX_BODY

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b" " * 8192
        while sent < total:
            sent += len(chunk)
            yield chunk

    async def scenario(client: Client) -> tuple[int, Any]:
        resp = await client.post(
            "/alerts",
            data=body(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        return resp.status, await resp.json()

    status, answer = _run(receiver, scenario)
    assert status == 413
    assert "larger than" in answer["error"]
    # How much the client sent before the refusal is loopback buffering as much as the
    # server: the 413 and its message (above) are the server's part.
    assert cluster.recorded == 0


@pytest.mark.parametrize("auth", ["", "Bearer wrong", f"Basic {TOKEN}"])
def test_a_bad_token_is_refused_before_the_body_is_parsed(auth: str) -> None:
    receiver, cluster = _receiver()

    async def scenario(client: Client) -> tuple[int, Any, str | None]:
        headers = {"Authorization": auth} if auth else {}
        resp = await client.post("/alerts", data=b"{not json", headers=headers)
        return resp.status, await resp.json(), resp.headers.get("WWW-Authenticate")

    status, answer, challenge = _run(receiver, scenario)
    assert status == 401
    assert TOKEN not in json.dumps(answer)
    assert challenge is not None
    assert challenge.startswith("Bearer")
    assert cluster.recorded == 0
