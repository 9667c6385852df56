"""The alert receiver over real HTTP (aiohttp's test server): auth, limits, routing."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from modelcycle_operator import api, reconcile
from modelcycle_operator.pure import intake
from modelcycle_operator.pure.alerts import Alert
from modelcycle_operator.receiver import AlertReceiver, RateLimiter, TokenSource
from modelcycle_operator.settings import Settings

TOKEN = "s3cret-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Target = tuple[str, str]


def alert(name: str = "iris", namespace: str = "ml", fp: str = "f1", **kw: Any) -> Any:
    labels = {"alertname": "AccuracyLow", "modelcycle": name, "namespace": namespace}
    labels.update(kw.pop("labels", {}))
    return {
        "status": kw.pop("status", "firing"),
        "labels": labels,
        "startsAt": "2026-12-01T12:00:00Z",
        "fingerprint": fp,
        **kw,
    }


def payload(*alerts: Any) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "alerts": list(alerts) or [alert()]}


class Recorder:
    """Stands in for the status write: records calls, answers per target."""

    def __init__(self) -> None:
        self.calls: list[tuple[Target, list[str]]] = []
        self.woken: list[Target] = []
        self.missing: set[Target] = set()
        self.failing: set[Target] = set()

    async def record(self, target: Target, alerts: Sequence[Alert]) -> intake.Change | None:
        self.calls.append((target, [a.fingerprint for a in alerts]))
        if target in self.failing:
            raise api.ApiError(500, "InternalError", "etcd is gone")
        if target in self.missing:
            return None
        results = [
            intake.AlertResult("Retrain" if i == 0 else "Pending", "ok") for i in range(len(alerts))
        ]
        return intake.Change(status={}, wake=True, results=tuple(results))


Call = Callable[[TestClient[Any, Any], Recorder], Awaitable[None]]


def serve(call: Call, recorder: Recorder | None = None, **settings: Any) -> Recorder:
    recorder = recorder or Recorder()
    options: dict[str, Any] = {"receiver_token": TOKEN, **settings}
    receiver = AlertReceiver(
        Settings(**options), record=recorder.record, wake=recorder.woken.append
    )

    async def main() -> None:
        async with TestClient(TestServer(receiver.app)) as client:
            await call(client, recorder)

    asyncio.run(main())
    return recorder


async def post(
    client: TestClient[Any, Any], body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post("/alerts", data=data, headers=AUTH if headers is None else headers)
    return response.status, await response.json(), response.headers


# --- auth -----------------------------------------------------------------------------------


class TestAuth:
    @pytest.mark.parametrize(
        ("headers", "message"),
        [
            ({}, "a bearer token is required"),
            ({"Authorization": ""}, "a bearer token is required"),
            ({"Authorization": "Bearer"}, "a bearer token is required"),
            ({"Authorization": "Bearer "}, "a bearer token is required"),
            ({"Authorization": f"Basic {TOKEN}"}, "a bearer token is required"),
            ({"Authorization": "Bearer wrong"}, "the bearer token is not valid"),
            ({"Authorization": f"Bearer {TOKEN}x"}, "the bearer token is not valid"),
            ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "the bearer token is not valid"),
        ],
    )
    def test_refused(self, headers: dict[str, str], message: str) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            code, body, hdrs = await post(client, payload(), headers)
            assert code == 401
            assert message in body["error"]
            assert hdrs["WWW-Authenticate"].startswith("Bearer")

        assert serve(call).calls == []

    @pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
    def test_accepted(self, scheme: str) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            code, body, _ = await post(client, payload(), {"Authorization": f"{scheme} {TOKEN}"})
            assert code == 202, body

        assert len(serve(call).calls) == 1

    def test_unconfigured_refuses_everything_and_says_so_once(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, "modelcycle_operator.receiver")

        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            for headers in (AUTH, {}, {"Authorization": "Bearer "}):
                code, body, _ = await post(client, payload(), headers)
                assert (code, body) == (
                    401,
                    {"error": "the alert receiver has no token configured"},
                )
            health = await client.get("/healthz")
            assert await health.json() == {"status": "ok", "tokenConfigured": False}

        assert serve(call, receiver_token="").calls == []
        unconfigured = [r for r in caplog.records if "no token configured" in r.getMessage()]
        assert len(unconfigured) == 1

    def test_token_from_a_file_follows_rotation(self, tmp_path: Path) -> None:
        path = tmp_path / "token"
        path.write_text(f"{TOKEN}\n")

        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            assert (await post(client, payload()))[0] == 202
            path.write_text("rotated-token-value")
            assert (await post(client, payload()))[0] == 401
            code, _, _ = await post(
                client, payload(), {"Authorization": "Bearer rotated-token-value"}
            )
            assert code == 202
            path.unlink()
            assert (await post(client, payload()))[0] == 401

        serve(call, receiver_token="", receiver_token_file=str(path))

    def test_the_token_is_never_logged_or_answered(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)

        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            for headers in (AUTH, {"Authorization": "Bearer nope"}):
                response = await client.post("/alerts", data=json.dumps(payload()), headers=headers)
                assert TOKEN not in await response.text()
                assert "nope" not in await response.text()

        serve(call)
        assert TOKEN not in caplog.text
        assert "nope" not in caplog.text
        assert TOKEN not in repr(Settings(receiver_token=TOKEN))


class TestTokenSource:
    def test_setting_wins_and_file_is_reread(self, tmp_path: Path) -> None:
        assert TokenSource("a").get() == "a"
        assert TokenSource().get() == ""
        path = tmp_path / "t"
        path.write_text(" b \n")
        source = TokenSource(path=str(path))
        assert source.get() == "b"
        path.write_text("cc")
        assert source.get() == "cc"
        assert "file" in source.source

    def test_unreadable_file_is_logged_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        source = TokenSource(path=str(tmp_path / "missing"))
        assert source.get() == ""
        assert source.get() == ""
        assert len([r for r in caplog.records if "cannot read the token file" in r.message]) == 1


# --- limits ---------------------------------------------------------------------------------


class TestRateLimiter:
    def test_bucket_per_client(self) -> None:
        now = [0.0]
        limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
        assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.take("a") == pytest.approx(0.5)
        assert limiter.take("b") == 0.0  # another client has its own bucket
        now[0] += 0.5
        assert limiter.take("a") == 0.0
        now[0] += 100
        assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled to burst only
        assert limiter.take("a") > 0

    def test_client_table_is_bounded(self) -> None:
        limiter = RateLimiter(rate=1.0, burst=1, clock=lambda: 0.0, max_clients=3)
        for client in "abcde":
            limiter.take(client)
        assert list(limiter._buckets) == ["c", "d", "e"]

    def test_429_with_retry_after_and_healthz_is_exempt(self) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            codes = [(await post(client, payload()))[0] for _ in range(3)]
            assert codes == [202, 202, 429]
            code, body, headers = await post(client, payload())
            assert code == 429
            assert int(headers["Retry-After"]) >= 1
            assert "too many requests" in body["error"]
            assert (await client.get("/healthz")).status == 200

        assert len(serve(call, receiver_burst=2, receiver_rate=0.1).calls) == 2


class TestBodySize:
    def test_refused_from_content_length_before_reading(self) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            code, body, _ = await post(client, b"[" + b" " * 5000 + b"]")
            assert code == 413
            assert "larger than 2048 bytes" in body["error"]

        assert serve(call, receiver_max_body_bytes=2048).calls == []

    def test_refused_while_reading_a_chunked_body(self) -> None:
        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000

        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            response = await client.post("/alerts", data=chunks(), headers=AUTH)
            assert response.status == 413
            assert "larger than" in (await response.json())["error"]

        serve(call, receiver_max_body_bytes=2048)

    def test_size_is_checked_before_the_token(self) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            code, _, _ = await post(client, b" " * 5000, headers={})
            assert code == 413

        serve(call, receiver_max_body_bytes=2048)


# --- payloads and routing -------------------------------------------------------------------


class TestPayload:
    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"{not json", "body is not JSON"),
            (b"\xff\xfe", "body is not JSON"),
            (b"", "body is not JSON"),
            ([], "payload must be a JSON object"),
            ({"version": "3", "status": "firing", "alerts": []}, 'version must be "4"'),
            ({"version": "4", "status": "firing"}, "alerts must be a list"),
            (payload(alert(startsAt="soon")), "alerts[0].startsAt is not an RFC 3339 time"),
            (payload(alert(labels={"x": 1})), "alerts[0].labels.x must be a string"),
        ],
    )
    def test_malformed_is_400_with_the_reason(self, body: Any, message: str) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            code, answer, _ = await post(client, body)
            assert code == 400
            assert message in answer["error"]

        assert serve(call).calls == []

    def test_unknown_paths_and_methods_answer_json(self) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            response = await client.get("/alerts")
            assert response.status == 405
            assert "error" in await response.json()
            response = await client.get("/nope")
            assert response.status == 404
            assert "error" in await response.json()

        serve(call)


class TestRouting:
    def test_alerts_are_grouped_per_modelcycle_in_order(self) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            body = payload(
                alert(fp="a"),
                alert("wine", fp="b"),
                alert(fp="c"),
                alert(labels={"modelcycle": ""}, fp="d"),
            )
            code, answer, _ = await post(client, body)
            assert code == 202
            assert answer["received"] == 4
            results = answer["results"]
            assert [r["fingerprint"] for r in results] == ["a", "b", "c", "d"]
            assert [r["result"] for r in results] == ["Retrain", "Retrain", "Pending", "Unrouted"]
            assert [r["modelcycle"] for r in results] == ["ml/iris", "ml/wine", "ml/iris", None]
            assert results[0]["alert"] == "AccuracyLow"
            assert results[0]["startsAt"] == "2026-12-01T12:00:00Z"

        rec = serve(call)
        assert sorted(rec.calls) == [(("ml", "iris"), ["a", "c"]), (("ml", "wine"), ["b"])]
        assert sorted(rec.woken) == [("ml", "iris"), ("ml", "wine")]

    def test_unknown_modelcycle_is_answered_and_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        recorder = Recorder()
        recorder.missing.add(("ml", "gone"))

        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            code, answer, _ = await post(client, payload(alert("gone"), alert()))
            assert code == 202
            assert [r["result"] for r in answer["results"]] == ["UnknownTarget", "Retrain"]

        serve(call, recorder)
        assert recorder.woken == [("ml", "iris")]
        assert "unknown ModelCycle ml/gone" in caplog.text

    def test_namespaces_not_served_are_not_looked_up(self) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            _, answer, _ = await post(client, payload(alert(namespace="other"), alert()))
            assert [r["result"] for r in answer["results"]] == ["UnknownTarget", "Retrain"]

        rec = serve(call, namespaces=("ml",))
        assert [c[0] for c in rec.calls] == [("ml", "iris")]

    def test_api_failure_is_503_so_alertmanager_retries(self) -> None:
        recorder = Recorder()
        recorder.failing.add(("ml", "iris"))

        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            code, answer, _ = await post(client, payload(alert(), alert("wine")))
            assert code == 503
            assert [r["result"] for r in answer["results"]] == ["Error", "Retrain"]

        serve(call, recorder)

    def test_healthz(self) -> None:
        async def call(client: TestClient[Any, Any], rec: Recorder) -> None:
            response = await client.get("/healthz")
            assert (response.status, await response.json()) == (
                200,
                {"status": "ok", "tokenConfigured": True},
            )

        serve(call)


class TestThroughTheStatus:
    """The default path: change_status + take_alerts on a fake API, then the reconcile."""

    def test_records_and_wakes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from modelcycle_fakes import World, make_body, make_spec

        world = World(make_body(spec=make_spec(monitoring={"cooldownSeconds": 0})))
        world.reconcile()
        world.run_cycle()
        body = world.body
        body["metadata"]["resourceVersion"] = "7"
        patches: list[dict[str, Any]] = []
        reconciled: list[tuple[str, str]] = []

        def get(namespace: str, name: str) -> dict[str, Any] | None:
            return json.loads(json.dumps(body)) if name == "iris" else None

        def patch(namespace: str, name: str, p: Any, rv: str | None) -> dict[str, Any]:
            assert rv == "7"
            patches.append(p)
            return body

        monkeypatch.setattr(api, "get_modelcycle", get)
        monkeypatch.setattr(api, "patch_modelcycle_status", patch)
        monkeypatch.setattr(api, "post_event", lambda *a: {})
        monkeypatch.setattr(
            reconcile, "reconcile", lambda ns, n, log=None: reconciled.append((ns, n))
        )
        receiver = AlertReceiver(Settings(receiver_token=TOKEN))

        async def main() -> None:
            async with TestClient(TestServer(receiver.app)) as client:
                code, answer, _ = await post(client, payload(alert(), alert("nobody")))
                assert code == 202
                assert [r["result"] for r in answer["results"]] == ["Retrain", "UnknownTarget"]
                for _ in range(100):
                    if reconciled:
                        break
                    await asyncio.sleep(0.01)

        asyncio.run(main())
        assert reconciled == [("ml", "iris")]
        assert patches[0]["triggers"]["pending"]["type"] == "Alert"


# --- lifecycle ------------------------------------------------------------------------------


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, int(sock.getsockname()[1])


class TestLifecycle:
    def test_start_serves_and_stop_closes(self) -> None:
        sock, port = _busy_port()
        sock.close()
        receiver = AlertReceiver(Settings(receiver_host="127.0.0.1", receiver_port=port))

        async def main() -> None:
            assert await receiver.start()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            assert b"200 OK" in data
            await receiver.stop()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)

        asyncio.run(main())

    def test_a_busy_port_is_logged_not_raised(self, caplog: pytest.LogCaptureFixture) -> None:
        sock, port = _busy_port()
        receiver = AlertReceiver(Settings(receiver_host="127.0.0.1", receiver_port=port))

        async def main() -> None:
            assert not await receiver.start()
            await receiver.stop()

        try:
            asyncio.run(main())
        finally:
            sock.close()
        assert "Alert receiver not started" in caplog.text
