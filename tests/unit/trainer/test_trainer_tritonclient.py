"""The model server against a V2 client this project did not write: Triton's `tritonclient`.

The server is the real `modelcycle-trainer serve` process on 127.0.0.1, serving an iris
model that the CLI itself collected and trained. tritonclient sends and asks for the
binary tensor data extension by default; the JSON-only mode is checked too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelcycle_trainer import modelio
from modelcycle_trainer.common import load_split

BIN = Path(sys.executable).parent / "modelcycle-trainer"


@dataclass
class Served:
    url: str
    version: str
    model: Any
    x: np.ndarray
    y: np.ndarray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _cli(artifacts: Path, *args: str) -> dict[str, Any]:
    log = artifacts.parent / "termination-log"
    cmd = [str(BIN), *args, "--artifacts", str(artifacts), "--termination-log", str(log)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    message: dict[str, Any] = json.loads(log.read_text())
    return message


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("triton")
    artifacts = root / "artifacts"
    _cli(artifacts, "collect", "--cycle", "1", "--data", '{"builtin": {"name": "iris"}}')
    training = {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "parameters": {"max_iter": 1000},
    }
    version = _cli(artifacts, "train", "--cycle", "1", "--training", json.dumps(training))[
        "version"
    ]
    model_dir = artifacts / "cycles/1/model"
    port = _free_port()
    cmd = [
        str(BIN),
        "serve",
        "--artifacts",
        str(artifacts),
        "--model-dir",
        str(model_dir),
        "--name",
        "iris",
        "--version",
        version,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--termination-log",
        str(root / "serve-log"),
    ]
    with (root / "serve.stderr").open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/v2/health/ready", timeout=2
                ) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, (root / "serve.stderr").read_text()
                assert time.monotonic() < deadline, "server not ready in 120 s"
                time.sleep(0.2)
        x, y = load_split(artifacts / "cycles/1/data/test.npz", "test")
        model = modelio.load_model(model_dir / modelio.MODEL_FILE)
        yield Served(f"127.0.0.1:{port}", version, model, x, y)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, (root / "serve.stderr").read_text()


@pytest.fixture
def client(served: Served) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(url=served.url)
    try:
        yield c
    finally:
        c.close()


def test_health_and_metadata(served: Served, client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("iris") is True
    assert client.is_model_ready("iris", served.version) is True
    assert client.is_model_ready("rose") is False
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris"
    assert meta["versions"] == [served.version]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert meta["outputs"][0]["datatype"] == "INT64"
    server = client.get_server_metadata()
    assert server["name"] == "modelcycle-trainer"
    assert "binary_tensor_data" in server["extensions"]


def test_infer_binary_by_default(served: Served, client: httpclient.InferenceServerClient) -> None:
    x = np.ascontiguousarray(served.x, dtype=np.float64)
    inp = httpclient.InferInput("input-0", list(x.shape), "FP64")
    inp.set_data_from_numpy(x)  # binary_data=True: raw bytes after the JSON header
    out = httpclient.InferRequestedOutput("predict")  # binary_data=True
    result = client.infer("iris", [inp], outputs=[out], request_id="triton-1")
    got = result.as_numpy("predict")
    assert got.dtype == np.int64
    assert got.tolist() == served.model.predict(x).tolist()
    assert float(np.mean(got == served.y)) > 0.9
    response = result.get_response()
    assert response["id"] == "triton-1"
    assert response["model_version"] == served.version
    assert response["outputs"][0]["parameters"] == {"binary_data_size": 8 * len(x)}


def test_infer_json_and_proba(served: Served, client: httpclient.InferenceServerClient) -> None:
    x = served.x[:5].astype(np.float32)
    inp = httpclient.InferInput("input-0", [5, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    outs = [
        httpclient.InferRequestedOutput("predict", binary_data=False),
        httpclient.InferRequestedOutput("predict_proba", binary_data=True),
    ]
    result = client.infer("iris", [inp], outputs=outs, model_version=served.version)
    want = served.model.predict(x.astype(np.float64))
    assert result.as_numpy("predict").tolist() == want.tolist()
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (5, 3)
    assert np.allclose(proba, served.model.predict_proba(x.astype(np.float64)))
    assert result.get_output("predict")["data"] == want.tolist()
    # no outputs named: tritonclient asks for binary_data_output, predict comes back
    result = client.infer("iris", [inp])
    assert result.as_numpy("predict").tolist() == want.tolist()


def test_errors_raise_with_the_servers_message(
    served: Served, client: httpclient.InferenceServerClient
) -> None:
    three = np.ones((2, 3))
    inp = httpclient.InferInput("input-0", [2, 3], "FP64")
    inp.set_data_from_numpy(three)
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris", [inp])
    assert err.value.message() == "model 'iris' expects 4 features, got 3"
    assert err.value.status() == "400"

    good = httpclient.InferInput("input-0", [1, 4], "FP64")
    good.set_data_from_numpy(served.x[:1])
    with pytest.raises(InferenceServerException) as err:
        client.infer("rose", [good])
    assert err.value.message() == "unknown model 'rose'; this server serves 'iris'"
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("rose")
    assert "unknown model 'rose'" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris", [good], model_version="9-deadbeef")
    assert "unknown version '9-deadbeef'" in err.value.message()
    bad = httpclient.InferInput("input-0", [1, 4], "FP64")
    bad.set_data_from_numpy(np.array([[1.0, np.nan, 2.0, 3.0]]))
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris", [bad])
    assert err.value.message() == "input 'input-0' contains NaN or infinite values"


def test_binary_inputs_feed_the_monitor(
    served: Served, client: httpclient.InferenceServerClient
) -> None:
    inp = httpclient.InferInput("input-0", list(served.x.shape), "FP64")
    inp.set_data_from_numpy(np.ascontiguousarray(served.x, dtype=np.float64))
    client.infer("iris", [inp])
    with urllib.request.urlopen(f"http://{served.url}/v2/models/iris/monitoring") as resp:
        summary = json.loads(resp.read())
    assert summary["version"] == served.version
    assert summary["drift"]["rows"] >= len(served.x)  # the binary batch was recorded
