"""serve: V2 + V1 protocol, every client error as a 4xx JSON answer, feedback, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from trainer_testlib import collect_and_train

from modelcycle_trainer import fastpath, modelio, serve
from modelcycle_trainer.common import WorkloadError, dumps_compact, load_split, sha256_file

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


# ----------------------------------------------------------------------------- fast start

HEAVY = ("sklearn", "scipy", "skops")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _card(artifacts: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((artifacts / "cycles/1/model/card.json").read_text())
    return card


def test_train_exports_a_fast_path_that_is_bit_identical(iris_cycle: tuple[Path, str]) -> None:
    artifacts, _ = iris_cycle
    mdir = artifacts / "cycles/1/model"
    card = _card(artifacts)
    path = mdir / fastpath.EXPORT_FILE
    assert card["fastPathFile"] == fastpath.EXPORT_FILE
    assert card["fastPathKind"] == "linear"
    assert card["fastPathSha256"] == sha256_file(path)
    exported = fastpath.load_export(path, card["fastPathSha256"])
    model = modelio.load_model(mdir / modelio.MODEL_FILE)
    x, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")
    rng = np.random.default_rng(7)
    for batch in (x, x[:1], rng.normal(5.0, 4.0, size=(500, 4))):
        want, got = model.predict(batch), exported.predict(batch)
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)
    assert exported.classes is not None
    assert exported.classes.tolist() == [0, 1, 2]


def test_a_pipeline_regressor_exports_and_a_forest_does_not(tmp_path: Path) -> None:
    ridge = {"estimator": "sklearn.linear_model.Ridge", "preprocessing": "minmax"}
    _, trained = collect_and_train(tmp_path / "ridge", {"builtin": {"name": "diabetes"}}, ridge)
    art = tmp_path / "ridge"
    card = _card(art)
    assert card["fastPathKind"] == "pipeline+linear"
    srv = serve.fast_start_server(_config(art, trained["version"]))
    assert srv is not None
    assert srv.model is None
    x, _ = load_split(art / "cycles/1/data/test.npz", "test")
    want = modelio.load_model(art / "cycles/1/model" / modelio.MODEL_FILE).predict(x)
    assert np.array_equal(srv._predict(x), want)

    forest = {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "parameters": {"n_estimators": 5},
    }
    _, trained = collect_and_train(tmp_path / "forest", {"builtin": {"name": "iris"}}, forest)
    card = _card(tmp_path / "forest")
    assert "fastPathSha256" not in card
    assert not (tmp_path / "forest/cycles/1/model" / fastpath.EXPORT_FILE).exists()
    assert serve.fast_start_server(_config(tmp_path / "forest", trained["version"])) is None


START_PROBE = """
import json, sys
from pathlib import Path
from modelcycle_trainer import serve
art = Path(sys.argv[1])
srv = serve.start_server(serve.ServeConfig(name="iris", version=sys.argv[2],
    model_dir=art / "cycles/1/model", artifacts=art))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy", "skops"))
print(json.dumps({"ready": srv.ready, "fast_path": srv.fast_path, "no_model": srv.model is None,
                  "heavy": heavy}))
"""


def test_fast_start_is_ready_before_scikit_learn_is_imported(
    iris_cycle: tuple[Path, str],
) -> None:
    artifacts, version = iris_cycle
    probe = subprocess.run(
        [sys.executable, "-c", START_PROBE, str(artifacts), version],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    state = json.loads(probe.stdout)
    assert state == {"ready": True, "fast_path": "linear", "no_model": True, "heavy": []}


def test_the_server_process_opens_its_port_before_importing_scikit_learn(
    iris_cycle: tuple[Path, str], tmp_path: Path
) -> None:
    """The real command under `python -X importtime`: every import is logged on stderr in
    order, and so is the ready line; then predict_proba (scikit-learn) answers too."""
    artifacts, version = iris_cycle
    port = _free_port()
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-c",
        "import sys; from modelcycle_trainer.cli import main; sys.exit(main())",
        "serve",
        "--artifacts",
        str(artifacts),
        "--model-dir",
        str(artifacts / "cycles/1/model"),
        "--name",
        "iris",
        "--version",
        version,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--termination-log",
        str(tmp_path / "termination-log"),
    ]
    err_path = tmp_path / "stderr"  # a file: -X importtime fills a pipe's 64 KiB quickly
    with err_path.open("w") as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, text=True)
    base = f"http://127.0.0.1:{port}"
    rows = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, err_path.read_text()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.05)
        answers = []
        for outputs in ([], [{"name": "predict_proba"}]):
            req = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": rows}]}
            req["outputs"] = outputs
            request = urllib.request.Request(
                f"{base}/v2/models/iris/infer", data=json.dumps(req).encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=60) as resp:  # proba waits for the load
                answers.append(json.loads(resp.read()))
        with urllib.request.urlopen(f"{base}/v2/models/iris", timeout=10) as resp:
            meta = json.loads(resp.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    err = err_path.read_text()
    assert proc.returncode == 0, err[-2000:]
    lines = err.splitlines()
    ready = next(i for i, ln in enumerate(lines) if "ready on" in ln)
    assert "fast start" in lines[ready]
    before = [ln.rsplit("|", 1)[-1].strip() for ln in lines[:ready] if ln.startswith("import time")]
    assert "aiohttp.web" in before
    assert [m for m in before if m.split(".")[0] in HEAVY] == []
    after = [ln.rsplit("|", 1)[-1].strip() for ln in lines[ready:] if ln.startswith("import time")]
    assert "sklearn" in after
    assert "skops.io" in after
    model = modelio.load_model(artifacts / "cycles/1/model" / modelio.MODEL_FILE)
    x = np.asarray(rows).reshape(2, 4)
    assert answers[0]["outputs"][0]["data"] == model.predict(x).tolist()
    assert answers[1]["outputs"][0]["name"] == "predict_proba"
    assert answers[1]["outputs"][0]["data"] == model.predict_proba(x).ravel().tolist()
    assert meta["parameters"]["fast_path"] == "linear"


def test_fast_start_answers_then_loads_the_model_in_the_background(
    iris_cycle: tuple[Path, str],
) -> None:
    artifacts, version = iris_cycle
    srv = serve.fast_start_server(_config(artifacts, version))
    assert srv is not None
    assert srv.model is None
    assert srv.ready
    full = serve.load_server(_config(artifacts, version))
    srv.load_after_listen = True  # the load starts when this test says so

    async def scenario(c: Client) -> None:
        status, body = await _json(c, "POST", INFER, json=_v2(ROWS, [3, 4], id="early"))
        assert status == 200
        assert body["outputs"][0]["data"] == _expected(full, ROWS)
        proba = _v2(ROWS, [3, 4], outputs=[{"name": "predict_proba"}])
        resp = await c.post(INFER, json=proba)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert "still loading scikit-learn" in (await resp.json())["error"]
        srv.begin_model_load()
        status, body = await _json(c, "POST", INFER, json=proba)  # waits for the load
        assert status == 200
        want = full.model.predict_proba(np.asarray(ROWS)).ravel().tolist()
        assert body["outputs"][0]["data"] == want
        status, meta = await _json(c, "GET", "/v2/models/iris")
        assert meta["parameters"]["fast_path"] == "linear"
        # monitoring still works: feedback by id, live accuracy, the input ring buffer
        status, _ = await _json(
            c, "POST", "/v2/models/iris/feedback", json={"id": "early", "labels": [0, 2, 1]}
        )
        assert status == 200
        status, mon = await _json(c, "GET", "/v2/models/iris/monitoring")
        assert status == 200
        assert mon["feedback"]["samples"] == 3
        assert mon["drift"]["rows"] == 6

    run(srv, scenario)
    assert srv.model is not None
    assert srv.fast_path == "linear"
    x, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")
    assert np.array_equal(srv._predict(x), full.model.predict(x))


def test_a_tampered_fast_path_file_is_refused_and_the_normal_start_used(
    iris_cycle: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    artifacts, version = iris_cycle
    path = artifacts / "cycles/1/model" / fastpath.EXPORT_FILE
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["m_coef"] = arrays["m_coef"][:, ::-1].copy()  # predicts other classes
    np.savez(path, **arrays)
    with caplog.at_level(logging.ERROR, logger="modelcycle_trainer.serve"):
        assert serve.fast_start_server(_config(artifacts, version)) is None
        srv = serve.start_server(_config(artifacts, version))
    assert "refusing the fast start from" in caplog.text
    assert "does not match the model card's" in caplog.text
    assert srv.model is not None  # the normal start: scikit-learn and model.skops
    assert srv.fast_path == "linear"  # compiled from the model itself
    x, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")
    assert np.array_equal(srv._predict(x), srv.model.predict(x))

    path.write_bytes(b"not a zip")
    card = _card(artifacts)
    card["fastPathSha256"] = sha256_file(path)
    (artifacts / "cycles/1/model/card.json").write_text(json.dumps(card))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="modelcycle_trainer.serve"):
        assert serve.fast_start_server(_config(artifacts, version)) is None
    assert "not a valid npz file" in caplog.text


def test_a_fast_path_that_disagrees_with_the_model_is_switched_off(
    iris_cycle: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A resealed (card sha256 updated) but wrong fastpath.npz: served until scikit-learn
    has loaded, then the re-verification fails and model.predict takes over."""
    artifacts, version = iris_cycle
    path = artifacts / "cycles/1/model" / fastpath.EXPORT_FILE
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["m_coef"] = arrays["m_coef"][:, ::-1].copy()
    np.savez(path, **arrays)
    card = _card(artifacts)
    card["fastPathSha256"] = sha256_file(path)
    (artifacts / "cycles/1/model/card.json").write_text(json.dumps(card))
    srv = serve.fast_start_server(_config(artifacts, version))
    assert srv is not None
    assert srv.fast_path == "linear"

    async def scenario(c: Client) -> Any:
        proba = _v2(ROWS, [3, 4], outputs=[{"name": "predict_proba"}])
        assert (await _json(c, "POST", INFER, json=proba))[0] == 200  # after the load
        status, body = await _json(c, "POST", INFER, json=_v2(ROWS, [3, 4]))
        assert status == 200
        return body, (await _json(c, "GET", "/v2/models/iris"))[1]

    with caplog.at_level(logging.ERROR, logger="modelcycle_trainer.serve"):
        body, meta = run(srv, scenario)
    assert "disagrees with model.predict" in caplog.text
    assert srv.fast_path == "none"
    assert meta["parameters"]["fast_path"] == "none"
    assert srv.model is not None
    assert body["outputs"][0]["data"] == srv.model.predict(np.asarray(ROWS)).tolist()


def test_a_model_refused_after_the_fast_start_makes_the_server_unready(
    iris_cycle: tuple[Path, str],
) -> None:
    artifacts, version = iris_cycle
    srv = serve.fast_start_server(_config(artifacts, version))
    assert srv is not None
    failures: list[str | None] = []
    srv.on_load_failure = lambda: failures.append(srv.load_error)
    model = artifacts / "cycles/1/model" / modelio.MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0")  # changed after the fast start

    async def scenario(c: Client) -> tuple[tuple[int, Any], tuple[int, Any]]:
        proba = _v2(ROWS, [3, 4], outputs=[{"name": "predict_proba"}])
        first = await _json(c, "POST", INFER, json=proba)
        return first, await _json(c, "GET", "/v2/health/ready")

    (status, body), (ready_status, ready) = run(srv, scenario)
    assert status == 503
    assert "does not match the sha256 in its model card" in body["error"]
    assert ready_status == 503
    assert ready["error"] == srv.load_error
    assert failures == [srv.load_error]
    assert not srv.ready


# ----------------------------------------------------------------------------- wire details


def test_default_answer_bytes_are_the_compact_json_of_the_payload(
    server: serve.ModelServer,
) -> None:
    async def scenario(c: Client) -> list[bytes]:
        bodies = []
        for extra in ({"id": 'quote " and ünïcode'}, {}, {}):
            resp = await c.post(INFER, json=_v2(ROWS, [3, 4], **extra))
            assert resp.status == 200
            assert resp.content_type == "application/json"
            bodies.append(await resp.read())
        return bodies

    bodies = run(server, scenario)
    want = _expected(server, ROWS)
    for body, rid in zip(bodies, ['quote " and ünïcode', None, None], strict=True):
        payload = json.loads(body)
        assert body == dumps_compact(payload).encode("utf-8")
        assert list(payload) == ["model_name", "model_version", "id", "outputs"]
        assert payload["outputs"] == [
            {"name": "predict", "shape": [3], "datatype": "INT64", "data": want}
        ]
        if rid is not None:
            assert payload["id"] == rid
        else:
            uuid.UUID(payload["id"])
    generated = [json.loads(b)["id"] for b in bodies[1:]]
    assert generated[0] != generated[1]


def test_non_finite_values_are_refused_in_every_layout(server: serve.ModelServer) -> None:
    cases = [
        b'{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP64",'
        b'"data":[[1,2,3,4],[1,2,Infinity,4]]}]}',
        b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1,-Infinity,3,4]}]}',
        b'{"inputs":[{"name":"x","shape":[20,4],"datatype":"FP64","data":['
        + b",".join([b"1"] * 79 + [b"NaN"])
        + b"]}]}",
    ]

    async def scenario(c: Client) -> list[tuple[int, Any]]:
        return [await _json(c, "POST", INFER, data=body) for body in cases]

    for status, body in run(server, scenario):
        assert (status, body["error"]) == (400, "input 'x' data contains NaN or infinite values")


def test_head_on_get_routes_answers_like_get_without_a_body(server: serve.ModelServer) -> None:
    paths = [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/iris",
        "/v2/models/iris/ready",
        f"/v2/models/iris/versions/{server.version}",
        "/v1/models/iris",
        "/v2/models/iris/monitoring",
    ]

    async def scenario(c: Client) -> None:
        for path in paths:
            get = await c.get(path)
            get_body = await get.read()
            head = await c.head(path)
            assert head.status == get.status == 200, path
            assert await head.read() == b""
            assert head.headers["Content-Length"] == str(len(get_body))
            assert head.headers["Content-Type"] == get.headers["Content-Type"]
        head = await c.head("/v2/models/rose")
        assert head.status == 404
        head = await c.head(INFER)
        assert head.status == 405
        metrics = await (await c.get("/metrics")).text()
        assert (
            'modelcycle_serving_requests_total{endpoint="health_ready",method="HEAD",'
            'status="200"} 1.0' in metrics
        )

    run(server, scenario)


def test_the_server_process_stops_when_the_model_is_refused_after_a_fast_start(
    iris_cycle: tuple[Path, str], tmp_path: Path
) -> None:
    """A model.skops replaced and resealed on the volume: the fast start from fastpath.npz
    opens the port, the background load refuses the file, the process exits 1 with the
    reason in its termination log (as the normal start would have)."""
    artifacts, version = iris_cycle
    mdir = artifacts / "cycles/1/model"
    (mdir / modelio.MODEL_FILE).write_bytes(b"PK not really a zip")
    card = _card(artifacts)
    card["modelSha256"] = sha256_file(mdir / modelio.MODEL_FILE)
    (mdir / modelio.CARD_FILE).write_text(json.dumps(card))
    term = tmp_path / "termination-log"
    cmd = [
        sys.executable,
        "-m",
        "modelcycle_trainer.cli",
        "serve",
        "--artifacts",
        str(artifacts),
        "--model-dir",
        str(mdir),
        "--name",
        "iris",
        "--version",
        version,
        "--port",
        str(_free_port()),
        "--host",
        "127.0.0.1",
        "--termination-log",
        str(term),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "fast start" in done.stderr
    error = json.loads(term.read_text())["error"]
    assert error.startswith("cannot load the model after the fast start: ")
    assert "is not a valid skops model file" in error
