"""serve: V2 + V1 protocol, every client error as a 4xx JSON answer, feedback, metrics."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from trainer_testlib import collect_and_train

from modelcycle_trainer import modelio, serve
from modelcycle_trainer.common import WorkloadError, load_split

T = TypeVar("T")
Client: TypeAlias = "TestClient[web.Request, web.Application]"

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
INFER = "/v2/models/iris/infer"


def _config(artifacts: Path, version: str, **kw: Any) -> serve.ServeConfig:
    return serve.ServeConfig(
        name="iris",
        version=version,
        model_dir=artifacts / "cycles/1/model",
        artifacts=artifacts,
        **kw,
    )


@pytest.fixture
def server(iris_cycle: tuple[Path, str]) -> serve.ModelServer:
    artifacts, version = iris_cycle
    return serve.load_server(_config(artifacts, version, max_body_bytes=64 * 1024))


def run(srv: serve.ModelServer, scenario: Callable[[Client], Awaitable[T]]) -> T:
    async def go() -> T:
        async with TestClient(TestServer(srv.app())) as client:
            return await scenario(client)

    return asyncio.run(go())


def _v2(rows: Any, shape: list[int], datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    tensor = {"name": "input-0", "shape": shape, "datatype": datatype, "data": rows}
    return {"inputs": [tensor], **extra}


async def _json(client: Client, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    resp = await client.request(method, path, **kw)
    assert resp.content_type in ("application/json", "text/plain")
    body = await resp.read()
    return resp.status, (json.loads(body) if resp.content_type == "application/json" else body)


def _expected(srv: serve.ModelServer, rows: Any) -> list[int]:
    result: list[int] = srv.model.predict(np.asarray(rows)).tolist()
    return result


def test_health_and_metadata(server: serve.ModelServer) -> None:
    async def scenario(c: Client) -> None:
        assert await _json(c, "GET", "/v2/health/live") == (200, {"live": True})
        assert await _json(c, "GET", "/v2/health/ready") == (200, {"ready": True})
        status, meta = await _json(c, "GET", "/v2")
        assert status == 200
        assert meta["name"] == "modelcycle-trainer"
        assert "version" in meta
        status, model = await _json(c, "GET", "/v2/models/iris")
        assert status == 200
        assert model["name"] == "iris"
        assert model["versions"] == [server.version]
        assert model["platform"] == "sklearn"
        assert model["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
        assert [o["name"] for o in model["outputs"]] == ["predict", "predict_proba"]
        assert model["outputs"][0] == {"name": "predict", "datatype": "INT64", "shape": [-1]}
        assert model["outputs"][1]["shape"] == [-1, 3]
        assert model["parameters"]["classes"] == [0, 1, 2]
        versioned = await _json(c, "GET", f"/v2/models/iris/versions/{server.version}")
        assert versioned == (200, model)
        assert await _json(c, "GET", "/v2/models/iris/ready") == (
            200,
            {"name": "iris", "ready": True},
        )
        assert (await _json(c, "GET", "/v1/models/iris"))[0] == 200

    run(server, scenario)


def test_infer_flat_nested_and_integer_inputs(server: serve.ModelServer) -> None:
    want = _expected(server, ROWS)
    flat = [v for row in ROWS for v in row]

    async def scenario(c: Client) -> None:
        status, body = await _json(c, "POST", INFER, json=_v2(flat, [3, 4], id="req-1"))
        assert status == 200
        assert body["model_name"] == "iris"
        assert body["model_version"] == server.version
        assert body["id"] == "req-1"
        assert body["outputs"] == [
            {"name": "predict", "shape": [3], "datatype": "INT64", "data": want}
        ]
        status, nested = await _json(c, "POST", INFER, json=_v2(ROWS, [3, 4], "FP32"))
        assert status == 200
        assert nested["outputs"][0]["data"] == want
        uuid.UUID(nested["id"])  # generated
        ints = [[5, 3, 1, 0], [7, 3, 5, 2]]
        status, body = await _json(c, "POST", INFER, json=_v2(ints, [2, 4], "INT64"))
        assert status == 200
        assert body["outputs"][0]["data"] == _expected(server, ints)
        path = f"/v2/models/iris/versions/{server.version}/infer"
        status, body = await _json(c, "POST", path, json=_v2(ROWS[0], [1, 4], "INT32"))
        assert status == 400  # 5.1 is not an INT32
        assert "is INT32 but its data has non-integer values" in body["error"]
        status, body = await _json(c, "POST", path, json=_v2(ROWS[0], [1, 4]))
        assert status == 200

    run(server, scenario)


def test_predict_proba_when_requested(server: serve.ModelServer) -> None:
    async def scenario(c: Client) -> None:
        req = _v2(ROWS, [3, 4], outputs=[{"name": "predict"}, {"name": "predict_proba"}])
        status, body = await _json(c, "POST", INFER, json=req)
        assert status == 200
        names = [o["name"] for o in body["outputs"]]
        assert names == ["predict", "predict_proba"]
        proba = body["outputs"][1]
        assert proba["shape"] == [3, 3]
        assert proba["datatype"] == "FP64"
        matrix = np.asarray(proba["data"]).reshape(3, 3)
        assert np.allclose(matrix.sum(axis=1), 1.0)
        assert matrix.argmax(axis=1).tolist() == body["outputs"][0]["data"]
        only = _v2(ROWS, [3, 4], outputs=[{"name": "predict_proba"}])
        status, body = await _json(c, "POST", INFER, json=only)
        assert status == 200
        assert [o["name"] for o in body["outputs"]] == ["predict_proba"]

    run(server, scenario)


def test_v1_predict(server: serve.ModelServer) -> None:
    async def scenario(c: Client) -> None:
        status, body = await _json(c, "POST", "/v1/models/iris:predict", json={"instances": ROWS})
        assert (status, body) == (200, {"predictions": _expected(server, ROWS)})
        status, body = await _json(
            c, "POST", "/v1/models/iris:predict", json={"instances": [[1, 2]]}
        )
        assert status == 400
        assert body["error"] == "model 'iris' expects 4 features, got 2"
        status, body = await _json(c, "POST", "/v1/models/iris:predict", json={"inputs": ROWS})
        assert status == 400
        assert "'instances' must be a non-empty list" in body["error"]
        status, body = await _json(c, "POST", "/v1/models/rose:predict", json={"instances": ROWS})
        assert status == 404
        assert body["error"] == "unknown model 'rose'; this server serves 'iris'"

    run(server, scenario)


BAD_REQUESTS: list[tuple[Any, int, str]] = [
    (_v2([1.0, 2.0, 3.0], [1, 3]), 400, "model 'iris' expects 4 features, got 3"),
    (_v2([1.0, 2.0, 3.0, 4.0], [4]), 400, "shape must be [rows, features]"),
    (_v2([1.0, 2.0, 3.0, 4.0], [1, 4, 1]), 400, "shape must be [rows, features]"),
    (_v2([1.0, 2.0, 3.0], [1, 4]), 400, "data has 3 values but shape [1, 4] needs 4"),
    (_v2([[1, 2, 3, 4], [5, 6]], [2, 4]), 400, "must be numbers in a flat or nested list"),
    (_v2(["a", "b", "c", "d"], [1, 4]), 400, "must be numbers"),
    (_v2([1, 2, 3, 4], [1, 4], "BYTES"), 400, "unsupported datatype 'BYTES'"),
    (_v2([1, 2, 3, 4], [1, 4], "FLOAT"), 400, "unsupported datatype 'FLOAT'"),
    (_v2([], [0, 4]), 400, "has no rows"),
    (_v2([1, 2, 3, 4], [1, 4], id=7), 400, "'id' must be a non-empty string"),
    (
        _v2([1, 2, 3, 4], [1, 4], outputs=[{"name": "explain"}]),
        400,
        "unknown output 'explain'; available: predict, predict_proba",
    ),
    (_v2([10**400, 1, 2, 3], [1, 4]), 400, "must be numbers"),
    ({"inputs": []}, 400, "'inputs' must be a non-empty list"),
    ({"input": []}, 400, "'inputs' must be a non-empty list"),
    ([1, 2, 3], 400, "request body must be a JSON object"),
    (
        {"inputs": [_v2([1, 2, 3, 4], [1, 4])["inputs"][0]] * 2},
        400,
        "expected exactly one input tensor",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_infer_client_errors(
    server: serve.ModelServer, body: Any, status: int, message: str
) -> None:
    async def scenario(c: Client) -> tuple[int, Any]:
        return await _json(c, "POST", INFER, json=body)

    got_status, got = run(server, scenario)
    assert got_status == status
    assert message in got["error"]


def test_raw_body_errors(server: serve.ModelServer) -> None:
    async def scenario(c: Client) -> None:
        status, body = await _json(c, "POST", INFER, data=b"{not json")
        assert status == 400
        assert body["error"].startswith("request body is not valid JSON")
        status, body = await _json(c, "POST", INFER, data=b"")
        assert (status, body["error"]) == (400, "request body is empty; send a JSON object")
        nan = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", '
        nan += b'"data": [NaN, 1, 2, 3]}]}'
        status, body = await _json(c, "POST", INFER, data=nan)
        assert (status, body["error"]) == (400, "input 'x' data contains NaN or infinite values")
        big = json.dumps(_v2([1.0] * 40_000, [10_000, 4])).encode()
        status, body = await _json(c, "POST", INFER, data=big)
        assert status == 413
        assert body["error"] == "request body over the limit of 65536 bytes"

    run(server, scenario)


def test_unknown_model_version_path_and_method(server: serve.ModelServer) -> None:
    async def scenario(c: Client) -> None:
        ok = _v2(ROWS[0], [1, 4])
        status, body = await _json(c, "POST", "/v2/models/rose/infer", json=ok)
        assert (status, body["error"]) == (
            404,
            "unknown model 'rose'; this server serves 'iris'",
        )
        status, body = await _json(c, "GET", "/v2/models/rose")
        assert status == 404
        status, body = await _json(c, "POST", "/v2/models/iris/versions/9-deadbeef/infer", json=ok)
        assert status == 404
        assert "unknown version '9-deadbeef' of model 'iris'" in body["error"]
        status, body = await _json(c, "GET", "/v2/nothing/here")
        assert (status, body["error"]) == (404, "no such path: GET /v2/nothing/here")
        status, body = await _json(c, "GET", INFER)
        assert (status, body["error"]) == (405, f"method GET not allowed on {INFER}")

    run(server, scenario)


def test_feedback_by_id_and_by_features(server: serve.ModelServer) -> None:
    fb = "/v2/models/iris/feedback"
    log = server.config.artifacts / "feedback" / f"{server.version}.jsonl"
    want = _expected(server, ROWS)

    async def scenario(c: Client) -> None:
        await _json(c, "POST", INFER, json=_v2(ROWS[:1], [1, 4], id="one"))
        await _json(c, "POST", INFER, json=_v2(ROWS, [3, 4], id="three"))
        status, body = await _json(c, "POST", fb, json={"id": "one", "label": 0})
        assert (status, body["recorded"]) == (200, 1)
        status, body = await _json(c, "POST", fb, json={"id": "one", "label": 0})
        assert status == 409
        assert body["error"] == "feedback for request 'one' was already recorded"
        status, body = await _json(c, "POST", fb, json={"id": "three", "label": 1})
        assert status == 400
        assert "that request had 3 rows; send 'labels' with 3 values" in body["error"]
        status, body = await _json(c, "POST", fb, json={"id": "three", "labels": [0, 2, 2]})
        assert (status, body["recorded"]) == (200, 3)
        status, body = await _json(c, "POST", fb, json={"id": "never", "label": 1})
        assert status == 404
        assert "unknown request id 'never'" in body["error"]
        status, body = await _json(c, "POST", fb, json={"features": ROWS[2], "label": 1})
        assert (status, body["recorded"]) == (200, 1)
        status, body = await _json(c, "POST", fb, json={"features": [1, 2], "label": 1})
        assert (status, body["error"]) == (400, "model 'iris' expects 4 features, got 2")
        status, body = await _json(c, "POST", fb, json={"features": ROWS[2], "label": "one"})
        assert status == 400
        assert "'label' must be an integer class label" in body["error"]
        status, body = await _json(c, "POST", fb, json={"label": 1})
        assert status == 400
        assert "needs 'id'" in body["error"]

    run(server, scenario)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 5
    assert records[0]["features"] == ROWS[0]
    assert records[0]["label"] == 0
    assert records[0]["prediction"] == want[0]
    assert records[0]["id"] == "one"
    assert [r["label"] for r in records[1:4]] == [0, 2, 2]
    assert [r["prediction"] for r in records[1:4]] == want
    assert records[4]["source"] == "features"
    assert records[4]["version"] == server.version


def test_feedback_ids_are_bounded(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    srv = serve.load_server(_config(artifacts, version, recent_requests=2))

    async def scenario(c: Client) -> int:
        for rid in ("a", "b", "c"):
            await _json(c, "POST", INFER, json=_v2(ROWS[0], [1, 4], id=rid))
        status, _ = await _json(c, "POST", "/v2/models/iris/feedback", json={"id": "a", "label": 0})
        return status

    assert run(srv, scenario) == 404
    assert len(srv.recent) == 2


def test_metrics(server: serve.ModelServer) -> None:
    async def scenario(c: Client) -> str:
        await _json(c, "POST", INFER, json=_v2(ROWS, [3, 4], id="m"))
        await _json(c, "POST", INFER, json=_v2([1.0], [1, 1]))
        await _json(c, "POST", "/v2/models/iris/feedback", json={"id": "m", "labels": [0, 0, 0]})
        resp = await c.get("/metrics")
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        return await resp.text()

    text = run(server, scenario)
    v = server.version
    assert (
        'modelcycle_serving_requests_total{endpoint="infer",method="POST",status="200"} 1.0' in text
    )
    assert (
        'modelcycle_serving_requests_total{endpoint="infer",method="POST",status="400"} 1.0' in text
    )
    assert 'modelcycle_serving_request_duration_seconds_count{endpoint="infer"} 2.0' in text
    assert f'modelcycle_serving_prediction_rows_total{{model="iris",version="{v}"}} 3.0' in text
    assert f'modelcycle_serving_predictions_total{{class="0",model="iris",version="{v}"}}' in text
    assert (
        f'modelcycle_serving_feedback_total{{model="iris",result="correct",version="{v}"}} 1.0'
        in text
    )
    assert "modelcycle_serving_model_info{" in text
    assert "process_cpu_seconds_total" in text
    assert "_created" not in text


def test_fast_path_is_verified_and_agrees(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    fast = serve.load_server(_config(artifacts, version))
    slow = serve.load_server(_config(artifacts, version, fast_path=False))
    assert fast.fast_path == "linear"
    assert slow.fast_path == "none"
    x, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")
    assert np.array_equal(fast._predict(x), slow._predict(x))


def test_fast_path_for_a_forest_regressor(tmp_path: Path) -> None:
    training = {
        "estimator": "sklearn.ensemble.RandomForestRegressor",
        "parameters": {"n_estimators": 10, "max_depth": 4},
    }
    _, trained = collect_and_train(tmp_path, {"builtin": {"name": "diabetes"}}, training)
    srv = serve.load_server(_config(tmp_path, trained["version"]))
    assert srv.fast_path == "trees"
    rows = load_split(tmp_path / "cycles/1/data/test.npz", "test")[0][:5]

    async def scenario(c: Client) -> tuple[int, Any]:
        return await _json(c, "POST", INFER, json=_v2(rows.tolist(), [5, 10]))

    status, body = run(srv, scenario)
    assert status == 200
    assert body["outputs"][0]["datatype"] == "FP64"
    assert body["outputs"][0]["data"] == srv.model.predict(rows).tolist()

    async def feedback(c: Client) -> tuple[tuple[int, Any], tuple[int, Any], str]:
        fb = "/v2/models/iris/feedback"
        good = await _json(c, "POST", fb, json={"features": rows[0].tolist(), "label": 151.0})
        bad = await _json(c, "POST", fb, json={"features": rows[0].tolist(), "label": "x"})
        return good, bad, await (await c.get("/metrics")).text()

    good, bad, text = run(srv, feedback)
    assert good == (200, {"recorded": 1, "id": None, "file": f"{trained['version']}.jsonl"})
    assert bad[0] == 400
    assert bad[1]["error"] == "'label' must be a finite number for a regression model"
    err = float(srv.model.predict(rows[:1])[0]) - 151.0
    line = next(ln for ln in text.splitlines() if ln.startswith("modelcycle_serving_feedback_sq"))
    assert float(line.split()[-1]) == pytest.approx(err**2)


def test_start_up_checks(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    with pytest.raises(WorkloadError, match="holds model version"):
        serve.load_server(_config(artifacts, "1-00000000"))
    with pytest.raises(WorkloadError, match="not a safe file name"):
        serve.load_server(_config(artifacts, "../x"))
    model = artifacts / "cycles/1/model" / modelio.MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(WorkloadError, match="does not match the sha256 in its model card"):
        serve.load_server(_config(artifacts, version))


def test_recent_inputs_ring_buffer() -> None:
    ring = serve.RecentInputs(4, 2)
    assert ring.snapshot().shape == (0, 2)
    ring.add(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    ring.add(np.array([[4.0, 4.0], [5.0, 5.0]]))  # wraps around
    assert ring.snapshot()[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    ring.add(np.arange(12.0).reshape(6, 2))  # larger than the buffer
    assert ring.snapshot()[:, 0].tolist() == [4.0, 6.0, 8.0, 10.0]
    assert ring.total == 11


def test_recent_inputs_endpoint(server: serve.ModelServer) -> None:
    async def scenario(c: Client) -> tuple[int, Any]:
        await _json(c, "POST", INFER, json=_v2(ROWS[:2], [2, 4]))
        await _json(c, "POST", "/v1/models/iris:predict", json={"instances": ROWS[2:]})
        await _json(c, "POST", INFER, json=_v2([1.0], [1, 1]))  # rejected: not recorded
        return await _json(c, "GET", "/v2/models/iris/inputs")

    status, body = run(server, scenario)
    assert status == 200
    assert body["rows"] == 3
    assert body["data"] == ROWS
    assert body["feature_names"][0] == "sepal length (cm)"


def _binary_request(
    header: dict[str, Any], raw: bytes, length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    size = len(head) if length is None else length
    return head + raw, {"Inference-Header-Content-Length": str(size)}


def test_binary_tensor_data_extension(server: serve.ModelServer) -> None:
    x = np.asarray(ROWS, dtype="<f4")
    tensor = {"name": "x", "shape": [3, 4], "datatype": "FP32"}
    want = _expected(server, x.astype(np.float64))

    async def post(c: Client, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, Any]:
        resp = await c.post(INFER, data=body, headers=headers)
        return resp.status, await resp.read(), resp.headers

    async def scenario(c: Client) -> None:
        params = {"binary_data_size": x.nbytes}
        req = {"inputs": [{**tensor, "parameters": params}], "outputs": [{"name": "predict"}]}
        status, body, _ = await post(c, *_binary_request(req, x.tobytes()))
        assert status == 200
        assert json.loads(body)["outputs"][0]["data"] == want

        req["outputs"] = [
            {"name": "predict_proba", "parameters": {"binary_data": True}},
            {"name": "predict", "parameters": {"binary_data": True}},
        ]
        status, body, headers = await post(c, *_binary_request(req, x.tobytes()))
        assert status == 200
        assert headers["Content-Type"] == "application/octet-stream"
        n = int(headers["Inference-Header-Content-Length"])
        head = json.loads(body[:n])
        sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
        assert sizes == [3 * 3 * 8, 3 * 8]
        assert all("data" not in o for o in head["outputs"])
        proba = np.frombuffer(body[n : n + sizes[0]], dtype="<f8").reshape(3, 3)
        assert np.allclose(proba.sum(axis=1), 1.0)
        assert np.frombuffer(body[n + sizes[0] :], dtype="<i8").tolist() == want

        errors = [
            (_binary_request(req, x.tobytes()[:-4]), "binary_data_size is 48 but 44 bytes"),
            (_binary_request(req, x.tobytes(), length=10**6), "must be an integer from 1"),
            (
                (json.dumps(req).encode(), {}),
                "has binary_data_size but the request has no Inference-Header-Content-Length",
            ),
            (
                _binary_request({"inputs": [{**tensor, "data": x.ravel().tolist()}]}, b"\0" * 8),
                "8 bytes follow the JSON header but input 'x' has no binary_data_size",
            ),
            (
                _binary_request(
                    {
                        "inputs": [
                            {**tensor, "datatype": "FP64", "parameters": {"binary_data_size": 44}}
                        ]
                    },
                    b"\0" * 44,
                ),
                "not a whole number of FP64 values (8 bytes each)",
            ),
        ]
        for (body_, headers_), message in errors:
            status, body, _ = await post(c, body_, headers_)
            assert status == 400
            assert message in json.loads(body)["error"]
        classify = {**req, "outputs": [{"name": "predict", "parameters": {"classification": 2}}]}
        status, body, _ = await post(c, *_binary_request(classify, x.tobytes()))
        assert status == 400
        assert "classification extension is not supported" in json.loads(body)["error"]

    run(server, scenario)
