"""Model-side helpers for bench/serving.py, run with the project's .venv python.

- `wide-csv OUT`: a synthetic 60-feature classification data set (seeded) as CSV;
- `export SKOPS JOBLIB`: load the project's skops model and save the SAME fitted
  estimator as joblib (for mlserver-sklearn);
- `rows NPZ N OUT`: N feature rows (the cycle's held-out split, repeated if short) as JSON;
- `predict SKOPS ROWS`: the model's own predictions for those rows (JSON list);
- `floor SKOPS ROWS`: in-process cost of the model's own `predict` on 1 and 32 of the rows
  (and of the server's verified fast path and of the JSON decode/encode), in µs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def wide_csv(out: str) -> None:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2000, n_features=60, n_informative=20, n_classes=3, random_state=0
    )
    cols = [f"f{i}" for i in range(x.shape[1])]
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(",".join([*cols, "target"]) + "\n")
        for row, label in zip(x, y, strict=True):
            fh.write(",".join(repr(float(v)) for v in row) + f",{int(label)}\n")


def _load(path: str) -> Any:
    from modelcycle_trainer import modelio

    return modelio.load_model(Path(path))


def export(skops_path: str, out: str) -> None:
    import joblib

    joblib.dump(_load(skops_path), out)


def rows(npz: str, n: str, out: str) -> None:
    with np.load(npz, allow_pickle=False) as data:
        x = np.asarray(data["X"], dtype=np.float64)
    want = int(n)
    x = np.concatenate([x] * (want // len(x) + 1))[:want]
    Path(out).write_text(json.dumps(x.tolist()), encoding="utf-8")


def predict(skops_path: str, rows_path: str) -> None:
    x = np.asarray(json.loads(Path(rows_path).read_text(encoding="utf-8")), dtype=np.float64)
    print(json.dumps(np.asarray(_load(skops_path).predict(x)).tolist()))


def _per_call_us(fn: Any, budget: float = 1.0) -> dict[str, float]:
    """Median (and min/max) of per-call µs over batches of calls filling `budget` seconds."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    per_batch = max(1, int(0.02 / one))  # ~20 ms batches
    samples: list[float] = []
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(samples) < 5:
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        samples.append((time.perf_counter() - t0) / per_batch * 1e6)
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "calls": per_batch * len(samples),
    }


def floor(skops_path: str, rows_path: str) -> None:
    from modelcycle_trainer import fastpath

    model = _load(skops_path)
    allx = np.asarray(json.loads(Path(rows_path).read_text(encoding="utf-8")), dtype=np.float64)
    compiled = fastpath.compile_predict(model)
    result: dict[str, Any] = {"fast_path": compiled[1] if compiled else None}
    for n in (1, 32):
        x = np.ascontiguousarray(allx[:n])
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(x.shape),
                        "datatype": "FP64",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        ).encode()
        pred = model.predict(x).tolist()

        def codec(body: bytes = body, pred: list[Any] = pred) -> bytes:
            t = json.loads(body)["inputs"][0]
            np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])
            return json.dumps({"outputs": [{"name": "predict", "data": pred}]}).encode()

        result[f"predict_{n}"] = _per_call_us(lambda x=x: model.predict(x))
        if compiled:
            result[f"fastpath_{n}"] = _per_call_us(lambda x=x: compiled[0](x))
        result[f"json_{n}"] = _per_call_us(codec)
    print(json.dumps(result))


if __name__ == "__main__":
    commands = {
        "wide-csv": wide_csv,
        "export": export,
        "rows": rows,
        "predict": predict,
        "floor": floor,
    }
    commands[sys.argv[1]](*sys.argv[2:])
