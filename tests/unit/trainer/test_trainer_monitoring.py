"""serve monitoring: live accuracy / error from feedback, input drift, /metrics and JSON.

/metrics is read with prometheus_client's own exposition parser, as Prometheus would.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from trainer_testlib import collect_and_train

from modelcycle_trainer import monitoring, serve
from modelcycle_trainer.common import load_split

T = TypeVar("T")
Client: TypeAlias = "TestClient[web.Request, web.Application]"

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
INFER = "/v2/models/iris/infer"
FEEDBACK = "/v2/models/iris/feedback"
MONITORING = "/v2/models/iris/monitoring"
DRIFT_FAMILIES = {
    "modelcycle_feature_drift_pvalue": {"model", "version", "feature"},
    "modelcycle_feature_drift_psi": {"model", "version", "feature"},
    "modelcycle_feature_drifted": {"model", "version", "feature"},
    "modelcycle_input_drifted": {"model", "version"},
    "modelcycle_drift_window_rows": {"model", "version"},
}


def _config(artifacts: Path, version: str, name: str = "iris", **kw: Any) -> serve.ServeConfig:
    return serve.ServeConfig(
        name=name,
        version=version,
        model_dir=artifacts / "cycles/1/model",
        artifacts=artifacts,
        **kw,
    )


def run(srv: serve.ModelServer, scenario: Callable[[Client], Awaitable[T]]) -> T:
    async def go() -> T:
        async with TestClient(TestServer(srv.app())) as client:
            return await scenario(client)

    return asyncio.run(go())


def _v2(rows: Any, **extra: Any) -> dict[str, Any]:
    arr = np.asarray(rows, dtype=np.float64)
    tensor = {"name": "input-0", "shape": list(arr.shape), "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": arr.ravel().tolist()}], **extra}


async def _post(c: Client, path: str, body: Any) -> Any:
    resp = await c.post(path, json=body)
    payload = await resp.json()
    assert resp.status == 200, payload
    return payload


async def _get(c: Client, path: str) -> tuple[int, Any]:
    resp = await c.get(path)
    return resp.status, await resp.json()


async def _families(c: Client) -> dict[str, Any]:
    resp = await c.get("/metrics")
    assert resp.status == 200
    return {f.name: f for f in text_string_to_metric_families(await resp.text())}


def _value(families: dict[str, Any], name: str, **labels: str) -> float | None:
    found = [s.value for s in families[name].samples if labels.items() <= s.labels.items()]
    assert len(found) <= 1
    return found[0] if found else None


async def _send(c: Client, rows: np.ndarray, batch: int = 50) -> None:
    for i in range(0, len(rows), batch):
        await _post(c, INFER, _v2(rows[i : i + batch]))


# ----------------------------------------------------------------------------- accuracy


def test_live_accuracy_from_feedback_and_after_a_restart(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    srv = serve.load_server(_config(artifacts, version, drift_interval=0.0))
    mv = {"model": "iris", "version": version}
    x_test, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")

    async def scenario(c: Client) -> tuple[dict[str, Any], dict[str, Any], Any]:
        before = await _families(c)
        body = await _post(c, INFER, _v2(ROWS, id="batch"))
        preds = body["outputs"][0]["data"]
        await _post(c, FEEDBACK, {"id": "batch", "labels": [(p + 1) % 3 for p in preds]})
        one = await _post(c, INFER, _v2(ROWS[:1]))
        wrong = (one["outputs"][0]["data"][0] + 2) % 3
        await _post(c, FEEDBACK, {"features": ROWS[0], "label": wrong})
        await _send(c, x_test)  # enough rows for drift values
        after = await _families(c)
        status, summary = await _get(c, MONITORING)
        assert status == 200
        return before, after, summary

    before, after, summary = run(srv, scenario)
    assert _value(before, "modelcycle_live_feedback_samples", **mv) == 0.0
    assert "modelcycle_live_accuracy" in before  # the family, without a value yet
    assert _value(before, "modelcycle_live_accuracy", **mv) is None
    assert _value(before, "modelcycle_drift_window_rows", **mv) == 0.0
    assert _value(before, "modelcycle_input_drifted", **mv) is None

    assert after["modelcycle_live_accuracy"].type == "gauge"
    assert _value(after, "modelcycle_live_accuracy", **mv) == 0.0
    assert _value(after, "modelcycle_live_feedback_samples", **mv) == 4.0
    for name in ("modelcycle_live_accuracy", "modelcycle_live_feedback_samples"):
        assert {frozenset(s.labels) for s in after[name].samples} == {frozenset(mv)}
    for name, labels in DRIFT_FAMILIES.items():
        family = after[name]
        assert family.type == "gauge"
        assert {frozenset(s.labels) for s in family.samples} == {frozenset(labels)}
    features = {s.labels["feature"] for s in after["modelcycle_feature_drifted"].samples}
    assert features == {
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    }
    assert _value(after, "modelcycle_drift_window_rows", **mv) == len(x_test) + 4
    assert "modelcycle_live_rmse" not in after  # classifier
    # the existing serving families are still there
    assert _value(after, "modelcycle_serving_feedback", result="incorrect", **mv) == 4.0
    assert "modelcycle_serving_model_info" in after

    assert summary["model"] == "iris"
    assert summary["version"] == version
    assert summary["feedback"] == {
        "samples": 4,
        "correct": 0,
        "accuracy": 0.0,
        "rmse": None,
        "mae": None,
    }

    # A restart (a new server process reading the same artifacts) keeps the numbers.
    again = serve.load_server(_config(artifacts, version))

    async def restarted(c: Client) -> tuple[dict[str, Any], Any]:
        fam = await _families(c)
        return fam, (await _get(c, MONITORING))[1]

    fam, summary2 = run(again, restarted)
    assert _value(fam, "modelcycle_live_accuracy", **mv) == 0.0
    assert _value(fam, "modelcycle_live_feedback_samples", **mv) == 4.0
    assert summary2["feedback"] == summary["feedback"]
    assert summary2["drift"]["rows"] == 0  # the input window is per process


def test_live_accuracy_counts_correct_feedback(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    srv = serve.load_server(_config(artifacts, version))

    async def scenario(c: Client) -> Any:
        body = await _post(c, INFER, _v2(ROWS, id="r"))
        preds = body["outputs"][0]["data"]
        labels = [preds[0], preds[1], (preds[2] + 1) % 3]  # 2 of 3 right
        await _post(c, FEEDBACK, {"id": "r", "labels": labels})
        return (await _get(c, MONITORING))[1]

    fb = run(srv, scenario)["feedback"]
    assert (fb["samples"], fb["correct"]) == (3, 2)
    assert fb["accuracy"] == pytest.approx(2 / 3)


def test_feedback_file_rebuild_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "1-abc.jsonl"
    lines = [
        {"label": 1, "prediction": 1, "version": "1-abc"},
        {"label": 2, "prediction": 1, "version": "1-abc"},
        {"label": "a", "prediction": "a", "version": "1-abc"},
        {"label": 1, "prediction": 1, "version": "2-def"},  # another version
        {"label": 1, "version": "1-abc"},  # no prediction
    ]
    text = "\n".join(json.dumps(r) for r in lines) + "\n{broken\n\n"
    path.write_text(text)
    live, skipped = monitoring.load_feedback(path, "1-abc", is_classifier=True)
    assert (live.samples, live.correct, skipped) == (3, 2, 3)
    assert live.accuracy == pytest.approx(2 / 3)
    reg, skipped = monitoring.load_feedback(path, "1-abc", is_classifier=False)
    assert (reg.samples, skipped) == (2, 4)  # the string labels do not count
    assert reg.rmse == pytest.approx(math.sqrt(0.5))
    assert reg.mae == pytest.approx(0.5)
    none, skipped = monitoring.load_feedback(tmp_path / "missing.jsonl", "1-abc", True)
    assert (none.samples, none.accuracy, skipped) == (0, None, 0)


def test_live_error_for_a_regressor(tmp_path: Path) -> None:
    training = {"estimator": "sklearn.linear_model.Ridge", "parameters": {}}
    _, trained = collect_and_train(tmp_path, {"builtin": {"name": "diabetes"}}, training)
    version = str(trained["version"])
    srv = serve.load_server(_config(tmp_path, version, name="diab"))
    x, y = load_split(tmp_path / "cycles/1/data/test.npz", "test")
    mv = {"model": "diab", "version": version}

    async def scenario(c: Client) -> tuple[dict[str, Any], Any]:
        fb = "/v2/models/diab/feedback"
        await _post(c, fb, {"features": x[:20].tolist(), "labels": y[:20].tolist()})
        return await _families(c), (await _get(c, "/v2/models/diab/monitoring"))[1]

    fam, summary = run(srv, scenario)
    errs = srv.model.predict(x[:20]) - y[:20]
    rmse, mae = float(np.sqrt(np.mean(errs**2))), float(np.mean(np.abs(errs)))
    assert _value(fam, "modelcycle_live_rmse", **mv) == pytest.approx(rmse)
    assert _value(fam, "modelcycle_live_mae", **mv) == pytest.approx(mae)
    assert _value(fam, "modelcycle_live_feedback_samples", **mv) == 20.0
    assert "modelcycle_live_accuracy" not in fam
    assert summary["feedback"]["rmse"] == pytest.approx(rmse)
    assert summary["feedback"]["mae"] == pytest.approx(mae)
    assert (summary["feedback"]["correct"], summary["feedback"]["accuracy"]) == (None, None)

    again = serve.load_server(_config(tmp_path, version, name="diab"))
    assert again.feedback_stats.rmse == pytest.approx(rmse)
    assert again.feedback_stats.samples == 20


# ----------------------------------------------------------------------------- drift


def test_drift_in_distribution_then_shifted(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    srv = serve.load_server(_config(artifacts, version, drift_interval=0.0))
    x_test, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")
    x_train, _ = load_split(artifacts / "cycles/1/data/train.npz", "train")
    shifted = np.tile(x_train + 5 * x_train.std(axis=0), (9, 1))  # fills the 1000-row window
    mv = {"model": "iris", "version": version}

    async def scenario(c: Client) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
        await _send(c, x_test)
        calm = (await _get(c, MONITORING))[1]
        calm_fam = await _families(c)
        await _send(c, shifted, batch=200)
        drifted = (await _get(c, MONITORING))[1]
        return calm, calm_fam, drifted, await _families(c)

    calm, calm_fam, drifted, fam = run(srv, scenario)
    d = calm["drift"]
    assert d["rows"] == len(x_test)
    assert d["drifted"] is False
    assert d["pValueThreshold"] == 0.05
    assert d["bonferroni"] is True
    assert d["featurePValueThreshold"] == pytest.approx(0.05 / 4)
    assert set(d["features"]) == {
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    }
    for f in d["features"].values():
        assert f["test"] == "ks"
        assert f["drifted"] is False
        assert f["pvalue"] >= 0.05 / 4
        assert set(f) == {"pvalue", "psi", "drifted", "test", "psiLevel"}
    assert _value(calm_fam, "modelcycle_input_drifted", **mv) == 0.0

    d = drifted["drift"]
    assert d["rows"] == 1000
    assert d["drifted"] is True
    assert d["driftedFeatures"] == 4
    for f in d["features"].values():
        assert f["drifted"] is True
        assert f["pvalue"] < 1e-6
        assert f["psi"] > 0.2
        assert f["psiLevel"] == "major"
    assert _value(fam, "modelcycle_input_drifted", **mv) == 1.0
    assert _value(fam, "modelcycle_drift_window_rows", **mv) == 1000.0
    for s in fam["modelcycle_feature_drifted"].samples:
        assert s.value == 1.0
    for s in fam["modelcycle_feature_drift_psi"].samples:
        assert s.value > 0.2


def _mixed_csv(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    num = rng.normal(10.0, 2.0, n)
    color = rng.choice([0, 1, 2], size=n, p=[0.5, 0.3, 0.2])
    target = ((num - 10.0) / 2.0 + color > 1.0).astype(int)
    lines = ["num,color,target"] + [
        f"{a:.6f},{b},{t}" for a, b, t in zip(num, color, target, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_categorical_features_use_chi2(tmp_path: Path) -> None:
    _mixed_csv(tmp_path / "d/mixed.csv", 600, seed=1)
    data = {"file": {"path": "d/mixed.csv", "format": "csv"}, "target": "target"}
    _, trained = collect_and_train(tmp_path, data)
    version = str(trained["version"])
    profile = json.loads((tmp_path / "cycles/1/data/profile.json").read_text())
    assert [f["kind"] for f in profile["featureStats"]] == ["numeric", "categorical"]
    srv = serve.load_server(_config(tmp_path, version, name="mixed", drift_interval=0.0))
    path = "/v2/models/mixed/infer"
    rng = np.random.default_rng(7)
    same = np.column_stack(
        [rng.normal(10.0, 2.0, 300), rng.choice([0, 1, 2], size=300, p=[0.5, 0.3, 0.2])]
    )
    # same numeric distribution; the colour moves to 2 and to a value never seen (5)
    moved = np.column_stack(
        [rng.normal(10.0, 2.0, 1000), rng.choice([2, 5], size=1000, p=[0.7, 0.3])]
    )

    async def scenario(c: Client) -> tuple[Any, Any, dict[str, Any]]:
        await _post(c, path, _v2(same))
        calm = (await _get(c, "/v2/models/mixed/monitoring"))[1]
        await _post(c, path, _v2(moved))
        drifted = (await _get(c, "/v2/models/mixed/monitoring"))[1]
        return calm, drifted, await _families(c)

    calm, drifted, fam = run(srv, scenario)
    features = calm["drift"]["features"]
    assert {k: v["test"] for k, v in features.items()} == {"num": "ks", "color": "chi2"}
    assert calm["drift"]["drifted"] is False
    assert not any(f["drifted"] for f in features.values())

    features = drifted["drift"]["features"]
    assert features["color"]["drifted"] is True
    assert features["color"]["pvalue"] < 1e-10
    assert features["color"]["psi"] > 0.2
    assert features["num"]["drifted"] is False
    assert drifted["drift"]["drifted"] is True  # 1 of 2 features: at least half
    mv = {"model": "mixed", "version": version}
    assert _value(fam, "modelcycle_feature_drifted", feature="color", **mv) == 1.0
    assert _value(fam, "modelcycle_feature_drifted", feature="num", **mv) == 0.0
    assert _value(fam, "modelcycle_input_drifted", **mv) == 1.0


def test_drift_is_lazy_cached_and_not_per_request(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    srv = serve.load_server(_config(artifacts, version))  # default: at most every 5 s
    assert srv.drift.interval == 5.0
    x_test, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")

    async def scenario(c: Client) -> None:
        await _send(c, x_test[:20])
        d = (await _get(c, MONITORING))[1]["drift"]
        assert (d["rows"], d["drifted"], d["features"]) == (20, None, {})
        assert d["reason"] == "20 of the 30 rows needed"
        assert srv.drift.computations == 0  # below the minimum: nothing computed
        await _send(c, x_test[20:])
        for _ in range(3):
            assert (await c.get("/metrics")).status == 200
        assert srv.drift.computations == 1
        assert srv.drift.rows == len(x_test)
        for row in x_test[:10]:  # predictions alone never compute drift
            await _post(c, INFER, _v2([row]))
        assert srv.drift.computations == 1
        d = (await _get(c, MONITORING))[1]["drift"]
        assert d["rows"] == len(x_test)  # the cached result, under 5 s old
        assert srv.drift.computations == 1
        srv.drift.interval = 0.0
        d = (await _get(c, MONITORING))[1]["drift"]
        assert d["rows"] == len(x_test) + 10
        assert srv.drift.computations == 2
        await _get(c, MONITORING)  # no new rows: nothing to recompute
        assert srv.drift.computations == 2

    run(srv, scenario)


def test_without_a_profile_drift_is_unknown(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    (artifacts / "cycles/1/data/profile.json").unlink()
    srv = serve.load_server(_config(artifacts, version, drift_interval=0.0))
    x_test, _ = load_split(artifacts / "cycles/1/data/test.npz", "test")

    async def scenario(c: Client) -> tuple[Any, dict[str, Any]]:
        await _send(c, x_test)
        return (await _get(c, MONITORING))[1], await _families(c)

    summary, fam = run(srv, scenario)
    assert summary["drift"]["drifted"] is None
    assert summary["drift"]["features"] == {}
    assert "no training profile at" in summary["drift"]["reason"]
    assert fam["modelcycle_input_drifted"].samples == []


def test_monitoring_endpoint_paths(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    srv = serve.load_server(_config(artifacts, version))

    async def scenario(c: Client) -> None:
        status, body = await _get(c, f"/v2/models/iris/versions/{version}/monitoring")
        assert status == 200
        assert set(body) == {"model", "version", "task", "feedback", "drift"}
        assert body["feedback"] == {
            "samples": 0,
            "correct": 0,
            "accuracy": None,
            "rmse": None,
            "mae": None,
        }
        status, body = await _get(c, "/v2/models/rose/monitoring")
        assert (status, body["error"]) == (404, "unknown model 'rose'; this server serves 'iris'")
        status, body = await _get(c, "/v2/models/iris/versions/9-x/monitoring")
        assert status == 404

    run(srv, scenario)


# ----------------------------------------------------------------------------- statistics


def test_drift_statistics_directly() -> None:
    rng = np.random.default_rng(0)
    ref_num = monitoring.prepare_feature("n", "numeric", rng.normal(0, 1, 1000))
    ref_cat = monitoring.prepare_feature("c", "categorical", np.repeat([0.0, 1.0], [600, 400]))
    ref_const = monitoring.prepare_feature("k", "categorical", np.zeros(500))
    refs = [ref_num, ref_cat, ref_const]
    cats = np.repeat([0.0, 1.0], [250, 150])  # the reference's 60 / 40 split
    calm = np.column_stack([rng.normal(0, 1, 400), cats, np.zeros(400)])
    res = monitoring.compute_drift(refs, calm)
    assert res.drifted is False
    assert not any(f.drifted for f in res.features.values())
    assert res.features["k"].pvalue == 1.0  # one value on both sides
    assert res.features["k"].psi == pytest.approx(0.0)
    assert [f.test for f in res.features.values()] == ["ks", "chi2", "chi2"]
    assert all(f.psi < 0.1 for f in res.features.values())

    moved = calm.copy()
    moved[:, 0] += 3.0
    moved[:, 2] = 4.0  # a value the reference never had
    res = monitoring.compute_drift(refs, moved)
    assert [f.drifted for f in res.features.values()] == [True, False, True]
    assert res.drifted is True  # 2 of 3
    assert res.features["k"].psi_level == "major"

    moved[:, 2] = 0.0
    res = monitoring.compute_drift(refs, moved)
    assert [f.drifted for f in res.features.values()] == [True, False, False]
    assert res.drifted is False  # 1 of 3: under half

    # Bonferroni: p < alpha is not enough, it takes p < alpha / n_features
    small = np.column_stack([rng.normal(0.3, 1, 60), calm[:60, 1:]])
    p = monitoring.compute_drift(refs, small).features["n"].pvalue
    assert 0.0 < p < 0.25
    assert monitoring.compute_drift(refs, small, p_value=2 * p).features["n"].drifted is False
    assert monitoring.compute_drift(refs, small, p_value=4 * p).features["n"].drifted is True
