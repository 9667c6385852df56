"""The `modelcycle-trainer` entry point end to end, as the Jobs and the Deployment run it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent / "modelcycle-trainer"


def _cli(
    tmp_path: Path, *args: str, log_name: str = "termination-log"
) -> tuple[int, str, str, dict[str, Any]]:
    log = tmp_path / log_name
    log.unlink(missing_ok=True)
    cmd = [str(BIN), *args, "--termination-log", str(log)]
    if "--artifacts" not in args and args and args[0] != "--help":
        cmd += ["--artifacts", str(tmp_path / "artifacts")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    message = json.loads(log.read_text()) if log.exists() else {}
    return proc.returncode, proc.stdout, proc.stderr, message


def test_collect_train_evaluate_end_to_end(tmp_path: Path) -> None:
    data = json.dumps({"builtin": {"name": "iris"}, "testFraction": 0.25, "seed": 42})
    rc, out, err, msg = _cli(tmp_path, "collect", "--cycle", "1", "--data", data)
    assert (rc, err) == (0, "")
    assert msg["rows"] == 150
    assert msg["features"] == 4
    assert msg["task"] == "classification"
    assert msg["dataHash"].startswith("sha256:")
    assert json.loads(out) == msg
    assert len((tmp_path / "termination-log").read_bytes()) <= 4096

    training = json.dumps(
        {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "parameters": {"max_iter": 1000},
            "preprocessing": "none",
        }
    )
    rc, _, err, msg = _cli(
        tmp_path, "train", "--cycle", "1", "--training", training, "--allowed-modules", "sklearn"
    )
    assert (rc, err) == (0, "")
    assert set(msg) == {"version", "fitSeconds"}
    assert msg["version"].startswith("1-")
    assert len(msg["version"]) == 10

    spec = tmp_path / "evaluation.json"
    spec.write_text(json.dumps({"metric": "accuracy", "threshold": 0.8}))
    rc, _, err, msg = _cli(tmp_path, "evaluate", "--cycle", "1", "--evaluation", f"@{spec}")
    assert (rc, err) == (0, "")
    assert msg["task"] == "classification"
    assert msg["metrics"]["accuracy"] > 0.9
    assert "confusionMatrix" not in json.dumps(msg)
    assert (tmp_path / "artifacts/cycles/1/metrics.json").is_file()


def test_train_with_evaluation_in_one_process(tmp_path: Path) -> None:
    data = json.dumps({"builtin": {"name": "wine"}})
    assert _cli(tmp_path, "collect", "--cycle", "1", "--data", data)[0] == 0
    training = json.dumps({"estimator": "sklearn.ensemble.RandomForestClassifier"})
    evaluation = json.dumps({"metric": "f1_macro", "threshold": 0.5})
    rc, out, err, msg = _cli(
        tmp_path, "train", "--cycle", "1", "--training", training, "--evaluation", evaluation
    )
    assert (rc, err) == (0, "")
    assert set(msg) == {"version", "fitSeconds", "metrics", "task"}
    assert msg["task"] == "classification"
    assert msg["metrics"]["f1_macro"] > 0.8
    log = (tmp_path / "termination-log").read_text()
    assert len(log.encode()) <= 4096
    assert log == json.dumps(msg, separators=(",", ":")), "compact"
    report = json.loads((tmp_path / "artifacts/cycles/1/metrics.json").read_text())
    assert report["version"] == msg["version"]
    assert report["metric"] == "f1_macro"
    assert json.loads(out) == msg

    bad = json.dumps({"metric": "mae"})
    rc, _, err, msg = _cli(
        tmp_path, "train", "--cycle", "1", "--training", training, "--evaluation", bad
    )
    assert rc == 1
    assert "evaluation.metric mae does not apply to a classification model" in msg["error"]


LR_JSON = json.dumps(
    {"estimator": "sklearn.linear_model.LogisticRegression", "parameters": {"max_iter": 1000}}
)


def test_train_with_data_collects_then_fits_in_one_process(tmp_path: Path) -> None:
    data = json.dumps({"builtin": {"name": "iris"}, "testFraction": 0.25, "seed": 7})
    evaluation = json.dumps({"metric": "accuracy", "threshold": 0.8})
    rc, out, err, msg = _cli(
        tmp_path, "train", "--cycle", "2", "--data", data, "--training", LR_JSON,
        "--evaluation", evaluation,
    )  # fmt: skip
    assert (rc, err) == (0, "")
    assert set(msg) == {"version", "fitSeconds", "metrics", "task", "collected"}
    assert msg["version"].startswith("2-")
    assert msg["metrics"]["accuracy"] > 0.8
    assert json.loads(out) == msg
    log = (tmp_path / "termination-log").read_text()
    assert len(log.encode()) <= 4096
    assert log == json.dumps(msg, separators=(",", ":"), ensure_ascii=False)

    # The collection is the collect subcommand's own: same snapshot, same message.
    alone = tmp_path / "alone"
    rc, _, err, by_collect = _cli(
        alone, "collect", "--cycle", "2", "--data", data, "--artifacts", str(alone / "a")
    )
    assert (rc, err) == (0, "")
    assert msg["collected"] == by_collect
    assert by_collect["rows"] == 150
    ddir = tmp_path / "artifacts/cycles/2/data"
    assert sorted(f.name for f in ddir.iterdir()) == [
        "profile.json",
        "snapshot.json",
        "test.npz",
        "train.npz",
    ]
    snapshot = json.loads((ddir / "snapshot.json").read_text())
    assert snapshot["dataHash"] == msg["collected"]["dataHash"]
    assert snapshot["seed"] == 7
    card = json.loads((tmp_path / "artifacts/cycles/2/model/card.json").read_text())
    assert card["dataHash"] == msg["collected"]["dataHash"]
    assert card["version"] == msg["version"]


def test_train_with_data_failing_to_collect_names_the_stage(tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    (art / "d").mkdir(parents=True)
    (art / "d/x.csv").write_text("a,b\n1,2\n3,4\n")
    data = json.dumps({"file": {"path": "d/x.csv"}, "target": "label"})
    rc, out, err, msg = _cli(
        tmp_path, "train", "--cycle", "1", "--data", data, "--training", LR_JSON
    )
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "modelcycle-trainer train: error during collect: target column 'label' not found"
    )
    assert msg == {
        "error": "target column 'label' not found in d/x.csv; available columns: a, b",
        "stage": "collect",
    }
    assert not (art / "cycles/1").exists(), "nothing half-collected, nothing trained"


def test_train_with_data_failing_to_fit_reports_what_it_collected(tmp_path: Path) -> None:
    data = json.dumps({"builtin": {"name": "iris"}})
    training = json.dumps({"estimator": "sklearn.linear_model.LinearRegression"})
    rc, _, err, msg = _cli(
        tmp_path, "train", "--cycle", "1", "--data", data, "--training", training
    )
    assert rc == 1
    assert err.startswith("modelcycle-trainer train: error during train: ")
    assert msg["stage"] == "train"
    assert "is a regressor but the data's task is classification" in msg["error"]
    assert msg["collected"]["rows"] == 150
    assert msg["collected"]["task"] == "classification"
    assert (tmp_path / "artifacts/cycles/1/data/snapshot.json").is_file()


def test_train_with_data_refuses_the_estimator_before_collecting(tmp_path: Path) -> None:
    data = json.dumps({"builtin": {"name": "iris"}})
    training = json.dumps({"estimator": "os.system"})
    rc, _, _, msg = _cli(tmp_path, "train", "--cycle", "1", "--data", data, "--training", training)
    assert rc == 1
    assert msg["stage"] == "train"
    assert "refused" in msg["error"]
    assert "collected" not in msg
    assert not (tmp_path / "artifacts/cycles").exists(), "refused before collecting"


def test_train_with_data_leaves_what_it_collected_before_it_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The termination log says the data was collected while the fit runs: what a
    container killed during the fit (out of memory) leaves for the operator."""
    from modelcycle_trainer import cli, train

    log = tmp_path / "log"
    seen: list[dict[str, Any]] = []

    def fit_killed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(json.loads(log.read_text()))
        raise MemoryError

    monkeypatch.setattr(train, "run", fit_killed)
    data = json.dumps({"builtin": {"name": "iris"}})
    argv = ["train", "--cycle", "1", "--data", data, "--training", LR_JSON]
    rc = cli.main([*argv, "--artifacts", str(tmp_path / "a"), "--termination-log", str(log)])
    assert rc == 1
    ((progress),) = seen
    assert progress["stage"] == "train"
    assert progress["collected"]["rows"] == 150
    final = json.loads(log.read_text())
    assert final == {"error": "out of memory", **progress}


@pytest.mark.parametrize("char", ["x", "é", '"', "\x01"])  # 1, 2, 2 and 6 bytes in JSON
def test_a_long_error_is_cut_but_keeps_its_stage(tmp_path: Path, char: str) -> None:
    from modelcycle_trainer import cli

    log = tmp_path / "log"
    collected = {"rows": 3, "features": 1, "task": "regression", "dataHash": "sha256:" + "0" * 64}
    cli.write_termination_log(
        str(log), {"error": char * 5000, "stage": "train", "collected": collected}
    )
    text = log.read_text(encoding="utf-8")
    assert 3000 < len(text.encode("utf-8")) <= 4096
    payload = json.loads(text)
    assert payload["stage"] == "train"
    assert payload["collected"] == collected
    assert payload["error"].endswith("...")
    assert payload["error"].startswith(char * 100)


def test_failure_is_one_line_exit_1_and_termination_error(tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    (art / "d").mkdir(parents=True)
    (art / "d/x.csv").write_text("a,b\n1,2\n3,4\n")
    data = json.dumps({"file": {"path": "d/x.csv"}, "target": "label"})
    rc, out, err, msg = _cli(tmp_path, "collect", "--cycle", "1", "--data", data)
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("modelcycle-trainer collect: error: target column 'label' not found")
    assert msg == {"error": "target column 'label' not found in d/x.csv; available columns: a, b"}


def test_refused_estimator_exit_1(tmp_path: Path) -> None:
    training = json.dumps({"estimator": "os.system"})
    rc, _, err, msg = _cli(tmp_path, "train", "--cycle", "1", "--training", training)
    assert rc == 1
    assert err.count("\n") == 1
    assert "refused" in msg["error"]
    assert "allowed modules (sklearn)" in msg["error"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["collect", "--data", "{}"], "the following arguments are required: --cycle"),
        (["collect", "--cycle", "0", "--data", "{}"], "argument --cycle: must be >= 1, got 0"),
        (["collect", "--cycle", "1", "--data", "{oops"], "--data is not valid JSON"),
        (["bake"], "invalid choice: 'bake'"),
        (["train", "--cycle", "1", "--training", "[]"], "--training must be a JSON object"),
        (
            ["train", "--cycle", "1", "--training", LR_JSON, "--data", "{oops"],
            "--data is not valid JSON",
        ),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    rc, out, err, msg = _cli(tmp_path, *args)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1
    assert expected in err
    assert msg["error"].startswith("usage: ")
    assert expected in msg["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_serve_starts_answers_and_stops_on_sigterm(iris_cycle: tuple[Path, str]) -> None:
    artifacts, version = iris_cycle
    port = _free_port()
    log = artifacts / "serve-log"
    cmd = [
        str(BIN),
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
        str(log),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5, 3, 1, 0]}]}
        ).encode()
        req = urllib.request.Request(f"{base}/v2/models/iris/infer", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["outputs"][0]["data"] == [0]
    finally:
        proc.terminate()  # SIGTERM, as the kubelet sends
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"model iris version {version} ready on http://127.0.0.1:{port}" in err
    assert json.loads(log.read_text()) == {"stopped": True, "model": "iris", "version": version}


def test_serve_refuses_a_wrong_version(iris_cycle: tuple[Path, str], tmp_path: Path) -> None:
    artifacts, _ = iris_cycle
    rc, _, err, msg = _cli(
        tmp_path,
        "serve",
        "--artifacts",
        str(artifacts),
        "--model-dir",
        str(artifacts / "cycles/1/model"),
        "--name",
        "iris",
        "--version",
        "1-00000000",
    )
    assert rc == 1
    assert err.count("\n") == 1
    assert "not --version '1-00000000'" in msg["error"]
