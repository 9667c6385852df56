"""`serve`: an aiohttp model server speaking Open Inference Protocol V2 and KServe V1.

Purpose: serve one model (the `model.skops` + `card.json` of one cycle) fast and with
clear client errors:
- `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2` (server metadata),
  `GET /v2/models/{m}[/versions/{v}]` (model metadata), `GET /v2/models/{m}[...]/ready`;
- `POST /v2/models/{m}[/versions/{v}]/infer` — one input tensor of shape
  `[rows, n_features]` (FP64/FP32/FP16, INT8..INT64, UINT8..UINT64), data flat or
  nested; outputs `predict` by default, or exactly the ones the request's `outputs`
  names (`predict`, `predict_proba`), in that order; the request `id` is echoed (one is
  generated when absent: uuid-shaped, a random per-process prefix and a counter). The
  binary tensor data extension (what Triton's clients send by default) works both ways:
  an `Inference-Header-Content-Length` header splits the body into the JSON header and
  the input's raw little-endian bytes (`parameters.binary_data_size`); an output
  requested with `parameters.binary_data: true` (or all, with the request's
  `binary_data_output`) comes back as raw bytes after the JSON, with that header set
  on the answer;
- `POST /v1/models/{m}:predict` `{"instances": [[...], ...]}` -> `{"predictions": [...]}`,
  `GET /v1/models/{m}`;
- `POST /v2/models/{m}/feedback` — ground truth, either `{"id": <request id>,
  "label": y}` (`"labels": [...]` for a multi-row request) resolved through a bounded
  in-memory map of recent predictions, or `{"features": [...] | [[...]], "label" |
  "labels"}`; appended to `ARTIFACTS/feedback/<version>.jsonl` and fsync'ed before 200;
- `GET /metrics` — Prometheus text: requests by endpoint/status, latency histogram,
  predictions by class, feedback outcomes, model info, process metrics, and (see
  `monitoring`) `modelcycle_live_accuracy` / `_rmse` / `_mae` /
  `_feedback_samples` over all feedback of this version (rebuilt from the feedback file
  at start), `modelcycle_feature_drift_pvalue` / `_psi`, `modelcycle_feature_drifted`,
  `modelcycle_input_drifted` and `modelcycle_drift_window_rows`;
- `GET /v2/models/{m}[/versions/{v}]/monitoring` — the same live numbers as JSON for
  the operator's built-in monitor: `{"model", "version", "task", "feedback": {"samples",
  "correct", "accuracy", "rmse", "mae"}, "drift": {"rows", "drifted", "features":
  {name: {"pvalue", "psi", "drifted", "test", "psiLevel"}}, "pValueThreshold",
  "bonferroni", ...}}` (null where not known yet);
- `GET /v2/models/{m}/inputs` — the last 1000 input rows (oldest first, this replica
  only), the live side of the drift comparison against the training profile.

Every GET route answers HEAD too (same status and headers, no body).

Every client mistake is a 4xx with `{"error": "..."}` naming what is wrong: 400 for
malformed JSON/shape/datatype/feature count/non-finite values, 404 for an unknown model,
version, request id or path, 405 for a wrong method, 409 for feedback given twice for one
request, 413 over the body limit. 5xx means a server-side fault only, or 503 (with
Retry-After) for a `predict_proba` asked during the fast start's background load.

Start: when the model card names a `fastpath.npz` (written by `train` for linear models
and their scaler pipelines, see `fastpath`), the server checks its sha256 against the
card, rebuilds the predictor with numpy alone, opens the port and is ready; nothing of
scikit-learn, scipy or skops is imported before that. Then a worker thread imports
scikit-learn, loads `model.skops` through `modelio` (same trust policy) and re-verifies the
fast path against `model.predict`: requests that need scikit-learn (`predict_proba`)
await it, at most `model_wait` s; a disagreement switches to `model.predict` (logged as
an error, `fast_path: "none"` in the metadata); a refused model makes the server unready
and stops it. A missing or refused `fastpath.npz` (logged) means the normal start:
scikit-learn and the model loaded, the fast path compiled and verified, then the port.

Speed: everything static (metadata and health bodies, datatypes, label children of the
metrics, the head of the default answer) is built once at start; the predictor is
warmed up before the port opens; a request is decoded with `json` straight into a numpy
array, validated with vectorised checks, and scikit-learn's own finiteness re-check is switched off
(`assume_finite`) because the server already did it. No access log (use /metrics).
Drift is never computed per request: a request only copies its rows into the ring
buffer; the tests run when /metrics or /monitoring is asked and the last run is older
than `--drift-interval` (5 s), in a worker thread.

Limits: one model per process; no gRPC; no BYTES/BOOL inputs; one input tensor per
request (the model takes a single feature matrix). Batches over 50 000 values are
predicted in a worker thread so the event loop keeps answering health checks. The
request-id map keeps the last 10 000 requests / 2 000 000 feature values (configurable);
older ids get a 404 that suggests sending features instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import itertools
import json
import logging
import math
import os
import re
import signal
import struct
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

from modelcycle_trainer import fastpath, modelio, monitoring
from modelcycle_trainer.common import (
    JSONDict,
    WorkloadError,
    dumps_compact,
    feedback_dir,
    sha256_file,
)

log = logging.getLogger("modelcycle_trainer.serve")


class ClientErrorLog(logging.Filter):
    """aiohttp logs every malformed request (a bad request line, header or chunk) as an
    ERROR with a full traceback on ``aiohttp.server``: anyone who can reach the pod could
    fill its log. Such a client error (an ``HttpProcessingError`` below 500) becomes one
    WARNING line without the traceback, at most one per ``every`` seconds, and that line
    says how many were left out since the one before. Server-side errors keep theirs."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.every = every
        self._clock = clock
        self._last: float | None = None
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or (exc.code or 400) >= 500:
            return True
        now = self._clock()
        if self._last is not None and now - self._last < self.every:
            self._dropped += 1
            return False
        self._last = now
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = str(exc.message or type(exc).__name__).replace("\n", " ")[:200]
        dropped = f" ({self._dropped} more since the last such line)" if self._dropped else ""
        self._dropped = 0
        record.msg = f"Malformed HTTP request from %s, answered {exc.code or 400}: %s%s"
        record.args = (remote, reason, dropped)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_client_errors = ClientErrorLog()

FloatArray = npt.NDArray[np.float64]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INPUT_DATATYPES = frozenset(
    {
        "FP64",
        "FP32",
        "FP16",
        "INT64",
        "INT32",
        "INT16",
        "INT8",
        "UINT64",
        "UINT32",
        "UINT16",
        "UINT8",
    }
)
INT_DATATYPES = frozenset(d for d in INPUT_DATATYPES if "INT" in d)
# Little-endian element types of the binary tensor data extension.
BINARY_DTYPES: dict[str, np.dtype[Any]] = {
    "FP64": np.dtype("<f8"),
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "INT16": np.dtype("<i2"),
    "INT8": np.dtype("i1"),
    "UINT64": np.dtype("<u8"),
    "UINT32": np.dtype("<u4"),
    "UINT16": np.dtype("<u2"),
    "UINT8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("predict", "predict_proba")
OFFLOAD_VALUES = 50_000
DEFAULT_MAX_BODY = 16 * 1024 * 1024
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SAFE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
JSON_TYPE = "application/json"
DEFAULT_OUTPUTS: tuple[tuple[str, bool], ...] = (("predict", False),)
# Generated request ids: uuid-shaped, a random per-process prefix and a counter (uuid4()
# per request cost 5% of the server's CPU).
_RID_PREFIX = str(uuid.uuid4())[:24]
_RID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_RID_PREFIX}{next(_RID_COUNTER):012x}"


class ClientError(Exception):
    """A request problem: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error(status: int, message: str) -> web.Response:
    body = dumps_compact({"error": message}).encode("utf-8")
    return web.Response(body=body, status=status, content_type=JSON_TYPE)


def _ok(payload: Any) -> web.Response:
    return web.Response(body=dumps_compact(payload).encode("utf-8"), content_type=JSON_TYPE)


def _finite_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _datatype_of(arr: npt.NDArray[Any]) -> str:
    kind = arr.dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if kind == "b":
        return "BOOL"
    return "BYTES"


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ServeConfig:
    name: str
    version: str
    model_dir: Path
    artifacts: Path
    allowed_modules: tuple[str, ...] = ("sklearn",)
    max_body_bytes: int = DEFAULT_MAX_BODY
    recent_requests: int = 10_000
    recent_values: int = 2_000_000
    recent_inputs: int = 1000
    fast_path: bool = True
    drift_p_value: float = monitoring.DEFAULT_P_VALUE
    drift_fraction: float = monitoring.DEFAULT_FRACTION
    drift_min_rows: int = monitoring.DEFAULT_MIN_ROWS
    drift_interval: float = monitoring.DEFAULT_INTERVAL
    # After a fast start: how long a request that needs scikit-learn (predict_proba)
    # waits for the background load before a 503 with Retry-After.
    model_wait: float = 10.0


# ----------------------------------------------------------------------------- metrics


class Metrics:
    """Prometheus metrics on a private registry (several servers may share a process)."""

    def __init__(self, name: str, version: str, card: JSONDict) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
            disable_created_metrics,
        )

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series

        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        p = "modelcycle_serving_"
        self._requests = Counter(
            p + "requests_total",
            "HTTP requests by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            p + "request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._rows = Counter(
            p + "prediction_rows_total",
            "Rows predicted.",
            ["model", "version"],
            registry=self.registry,
        )
        self._by_class = Counter(
            p + "predictions_total",
            "Predicted rows by predicted class (classifiers).",
            ["model", "version", "class"],
            registry=self.registry,
        )
        self._feedback = Counter(
            p + "feedback_total",
            "Labelled feedback rows recorded, by outcome (correct/incorrect for "
            "classifiers, recorded for regressors).",
            ["model", "version", "result"],
            registry=self.registry,
        )
        self._sq_error = Counter(
            p + "feedback_squared_error_sum",
            "Sum of squared errors over regression feedback rows.",
            ["model", "version"],
            registry=self.registry,
        )
        self._abs_error = Counter(
            p + "feedback_absolute_error_sum",
            "Sum of absolute errors over regression feedback rows.",
            ["model", "version"],
            registry=self.registry,
        )
        info = Gauge(
            p + "model_info",
            "The model this server serves (value 1).",
            ["model", "version", "estimator", "task", "cycle"],
            registry=self.registry,
        )
        info.labels(
            name,
            version,
            str(card.get("estimator", "")),
            str(card.get("task", "")),
            str(card.get("cycle", "")),
        ).set(1)
        self._mv = (name, version)
        self._rows_child = self._rows.labels(name, version)
        self._req_children: dict[tuple[str, str, int], Any] = {}
        self._lat_children: dict[str, Any] = {}
        self._class_children: dict[Any, Any] = {}
        self._fb_children: dict[str, Any] = {}
        self._sq_child = self._sq_error.labels(name, version)
        self._abs_child = self._abs_error.labels(name, version)

    def request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        child = self._req_children.get(key)
        if child is None:
            child = self._requests.labels(endpoint, method, str(status))
            self._req_children[key] = child
        child.inc()
        lat = self._lat_children.get(endpoint)
        if lat is None:
            lat = self._latency.labels(endpoint)
            self._lat_children[endpoint] = lat
        lat.observe(seconds)

    def predictions(self, labels: list[Any] | None, rows: int) -> None:
        self._rows_child.inc(rows)
        if labels is None:
            return
        counts = collections.Counter(labels) if rows > 1 else {labels[0]: 1}
        for label, n in counts.items():
            child = self._class_children.get(label)
            if child is None:
                if len(self._class_children) >= 1000:  # bound cardinality
                    continue
                child = self._by_class.labels(*self._mv, str(label))
                self._class_children[label] = child
            child.inc(n)

    def feedback(self, result: str, n: int = 1) -> None:
        child = self._fb_children.get(result)
        if child is None:
            child = self._feedback.labels(*self._mv, result)
            self._fb_children[result] = child
        child.inc(n)

    def regression_errors(self, sq: float, ab: float) -> None:
        self._sq_child.inc(sq)
        self._abs_child.inc(ab)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        data: bytes = generate_latest(self.registry)
        return data


# ----------------------------------------------------------------------------- recent


class RecentPredictions:
    """Bounded map request id -> (feature rows, predictions), oldest evicted first."""

    def __init__(self, max_requests: int, max_values: int) -> None:
        self.max_requests = max_requests
        self.max_values = max_values
        self._items: collections.OrderedDict[str, tuple[FloatArray, list[Any]]] = (
            collections.OrderedDict()
        )
        self._values = 0
        self._done: collections.OrderedDict[str, None] = collections.OrderedDict()

    def put(self, rid: str, x: FloatArray, predictions: list[Any]) -> None:
        if self.max_requests <= 0 or x.size > self.max_values:
            return
        old = self._items.pop(rid, None)
        if old is not None:
            self._values -= old[0].size
        self._done.pop(rid, None)
        self._items[rid] = (x, predictions)
        self._values += x.size
        while len(self._items) > self.max_requests or self._values > self.max_values:
            _, (ox, _) = self._items.popitem(last=False)
            self._values -= ox.size

    def get(self, rid: str) -> tuple[FloatArray, list[Any]] | None:
        return self._items.get(rid)

    def was_consumed(self, rid: str) -> bool:
        return rid in self._done

    def consume(self, rid: str) -> None:
        item = self._items.pop(rid, None)
        if item is not None:
            self._values -= item[0].size
        self._done[rid] = None
        while len(self._done) > self.max_requests:
            self._done.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# ----------------------------------------------------------------------------- feedback


class RecentInputs:
    """Ring buffer of the last `capacity` input rows: the live side of a drift comparison."""

    def __init__(self, capacity: int, n_features: int) -> None:
        self.capacity = capacity
        self._rows = np.empty((max(capacity, 0), n_features), dtype=np.float64)
        self._next = 0
        self.count = 0
        self.total = 0

    def add(self, x: FloatArray) -> None:
        cap = self.capacity
        if cap <= 0:
            return
        n = len(x)
        self.total += n
        if n >= cap:
            self._rows[:] = x[-cap:]
            self._next, self.count = 0, cap
            return
        end = self._next + n
        if end <= cap:
            self._rows[self._next : end] = x
        else:
            split = cap - self._next
            self._rows[self._next :] = x[:split]
            self._rows[: n - split] = x[split:]
        self._next = end % cap
        self.count = min(cap, self.count + n)

    def snapshot(self) -> FloatArray:
        """The buffered rows, oldest first."""
        if self.count < self.capacity:
            return self._rows[: self.count].copy()
        return np.concatenate([self._rows[self._next :], self._rows[: self._next]])


class FeedbackLog:
    """Appends JSON lines to one file; each append is flushed and fsync'ed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dir_synced = False

    def append(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if not self._dir_synced:
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
                self._dir_synced = True


# ----------------------------------------------------------------------------- server


class ModelServer:
    """The request handlers and the state they share; `app()` wires them to routes."""

    def __init__(
        self,
        model: Any,
        card: JSONDict,
        config: ServeConfig,
        exported: fastpath.Exported | None = None,
    ) -> None:
        """`model` is the fitted estimator, or None for a fast start from `exported`
        (fastpath.npz): then scikit-learn and the model are loaded in the background once
        the app starts (see `_load_model`)."""
        if model is None and exported is None:
            raise ValueError("ModelServer needs a model or an exported fast path")
        self.model = model
        self.card = card
        self.config = config
        self.name = config.name
        self.version = config.version
        self.n_features = int(card["nFeatures"])
        self.task = str(card.get("task", "classification"))
        self.is_classifier = self.task == "classification"
        if model is not None:
            self.has_proba = self.is_classifier and hasattr(model, "predict_proba")
            classes = getattr(model, "classes_", None)
        else:
            self.has_proba = self.is_classifier and card.get("hasPredictProba") is True
            classes = exported.classes if exported is not None else None
        self.classes: list[Any] | None = (
            np.asarray(classes).tolist() if classes is not None else None
        )
        # Feedback labels must be classes the model knows (ints as ints, anything as text).
        self._class_set: frozenset[Any] | None = (
            frozenset([*self.classes, *(str(c) for c in self.classes)])
            if self.classes is not None
            else None
        )
        self.metrics = Metrics(self.name, self.version, card)
        self.recent = RecentPredictions(config.recent_requests, config.recent_values)
        self.inputs = RecentInputs(config.recent_inputs, self.n_features)
        self.feedback_log = FeedbackLog(feedback_dir(config.artifacts) / f"{self.version}.jsonl")
        self.feedback_stats = monitoring.LiveFeedback(self.is_classifier)
        self.drift = monitoring.DriftMonitor(
            config.model_dir.parent / "data" / "profile.json",
            self.n_features,
            p_value=config.drift_p_value,
            fraction=config.drift_fraction,
            min_rows=config.drift_min_rows,
            interval=config.drift_interval,
        )
        if config.recent_inputs <= 0:
            self.drift.disable("no input rows are kept (--recent-inputs 0)", warn=False)
        collector = monitoring.MonitoringCollector(
            self.name, self.version, lambda: self.feedback_stats, self.drift
        )
        self.metrics.registry.register(collector)
        self.ready = False
        self.fast_path = "none"
        self._exported = exported
        self._predict: Callable[[FloatArray], npt.NDArray[Any]]
        if exported is not None:
            self._predict = exported.predict
            self.fast_path = exported.kind
        else:
            self._predict = model.predict
        self._model_task: asyncio.Task[None] | None = None
        self.load_error: str | None = None
        # Called (on the event loop) when the background load fails; `run` stops the server.
        self.on_load_failure: Callable[[], None] | None = None
        # True: the caller starts the background load itself once the port is open (`run`);
        # False: the app's on_startup does (tests' TestServer).
        self.load_after_listen = False
        self._predict_dt = "FP64"
        self._label_kind = "f"
        self._endpoint: dict[Any, str] = {}
        self._static: dict[str, bytes] = {}
        self._head = b""
        self._shape_open = b',"outputs":[{"name":"predict","shape":['
        self._data_open = b""

    # ------------------------------------------------------------------ start-up

    def enable_fast_path(self, samples: list[FloatArray]) -> str:
        """Switch to a verified direct predict (see fastpath); returns its kind or "none"."""
        compiled = fastpath.compile_predict(self.model)
        if compiled is None:
            return "none"
        fn, kind = compiled
        batches = fastpath.reference_inputs(self.n_features, samples)
        if not fastpath.verify(self.model, fn, batches):
            log.warning("fast path %s disagrees with predict; using predict", kind)
            return "none"
        self._predict = fn
        self.fast_path = kind
        return kind

    def restore_feedback(self) -> int:
        """Rebuild the live accuracy / error from this version's feedback file; rows counted."""
        try:
            live, skipped = monitoring.load_feedback(
                self.feedback_log.path, self.version, self.is_classifier
            )
        except OSError as exc:
            raise WorkloadError(
                f"cannot read feedback {self.feedback_log.path}: {exc.strerror or exc}"
            ) from None
        if skipped:
            log.warning("skipped %d unusable lines of %s", skipped, self.feedback_log.path)
        self.feedback_stats = live
        return live.samples

    def warm_up(self) -> None:
        """Predict once (loads lazily-built state, fixes output datatypes), then mark ready."""
        x = np.zeros((1, self.n_features))
        pred = np.asarray(self._predict(x))
        self._predict_dt = _datatype_of(pred)
        self._label_kind = pred.dtype.kind
        if self.has_proba and self.model is not None:
            self.model.predict_proba(x)
        feature_names = self.card.get("featureNames") or []
        outputs: list[JSONDict] = [{"name": "predict", "datatype": self._predict_dt, "shape": [-1]}]
        if self.has_proba:
            n_classes = len(self.classes or [])
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, n_classes]})
        model_meta: JSONDict = {
            "name": self.name,
            "versions": [self.version],
            "platform": "sklearn",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, self.n_features]}],
            "outputs": outputs,
            "parameters": {
                "estimator": self.card.get("estimator"),
                "task": self.task,
                "cycle": self.card.get("cycle"),
                "feature_names": feature_names,
                "classes": self.classes,
                "dataHash": self.card.get("dataHash"),
                "fast_path": self.fast_path,
            },
        }
        server_meta = {
            "name": "modelcycle-trainer",
            "version": _package_version(),
            "extensions": ["binary_tensor_data", "v1", "feedback", "metrics", "monitoring"],
        }
        ready = {"name": self.name, "ready": True}
        self._static = {
            "live": dumps_compact({"live": True}).encode(),
            "ready": dumps_compact({"ready": True}).encode(),
            "server": dumps_compact(server_meta).encode(),
            "model": dumps_compact(model_meta).encode(),
            "model_ready": dumps_compact(ready).encode(),
            "v1_model": dumps_compact(ready).encode(),
        }
        # The default answer, {"model_name","model_version","id","outputs":[{"name":
        # "predict","shape":[rows],"datatype","data"}]}, is spliced from these pieces.
        self._head = (
            f'{{"model_name":{dumps_compact(self.name)},'
            f'"model_version":{dumps_compact(self.version)},"id":'
        ).encode()
        self._data_open = f'],"datatype":{dumps_compact(self._predict_dt)},"data":'.encode()
        self.ready = self.load_error is None

    def app(self) -> web.Application:
        if not self._static:
            self.warm_up()
        server_log = logging.getLogger("aiohttp.server")
        if _client_errors not in server_log.filters:
            server_log.addFilter(_client_errors)
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._mw])
        r = app.router
        # The hot routes first: aiohttp tries resources in registration order.
        routes: list[tuple[str, str, Handler, str]] = [
            ("POST", "/v2/models/{model}/infer", self.infer, "infer"),
            ("POST", "/v1/models/{model:[^/:]+}:predict", self.v1_predict, "v1_predict"),
            ("POST", "/v2/models/{model}/versions/{version}/infer", self.infer, "infer"),
            ("POST", "/v2/models/{model}/feedback", self.feedback, "feedback"),
            ("GET", "/v2/health/live", self.live, "health_live"),
            ("GET", "/v2/health/ready", self.ready_handler, "health_ready"),
            ("GET", "/metrics", self.metrics_handler, "metrics"),
            ("GET", "/v2", self.server_metadata, "server_metadata"),
            ("GET", "/v2/models/{model}", self.model_metadata, "model_metadata"),
            ("GET", "/v2/models/{model}/ready", self.model_ready, "model_ready"),
            ("GET", "/v2/models/{model}/versions/{version}", self.model_metadata, "model_metadata"),
            ("GET", "/v2/models/{model}/versions/{version}/ready", self.model_ready, "model_ready"),
            ("POST", "/v2/models/{model}/versions/{version}/feedback", self.feedback, "feedback"),
            ("GET", "/v1/models/{model:[^/:]+}", self.v1_model, "v1_model"),
            ("GET", "/v2/models/{model}/inputs", self.recent_inputs, "recent_inputs"),
            ("GET", "/v2/models/{model}/monitoring", self.monitoring, "monitoring"),
            (
                "GET",
                "/v2/models/{model}/versions/{version}/monitoring",
                self.monitoring,
                "monitoring",
            ),
        ]
        for method, path, handler, endpoint in routes:
            route = r.add_route(method, path, handler)
            self._endpoint[route] = endpoint
            if method == "GET":  # HEAD: the same answer without its body (aiohttp drops it)
                self._endpoint[r.add_route("HEAD", path, handler)] = endpoint
        if self.model is None and not self.load_after_listen:
            app.on_startup.append(self._start_model_load)
        return app

    # ------------------------------------------------------------------ background load

    async def _start_model_load(self, _: web.Application) -> None:
        self.begin_model_load()

    def begin_model_load(self) -> None:
        """Start loading scikit-learn and the model in a worker thread (in a running loop)."""
        if self.model is None and self.load_error is None:
            self._model_task = asyncio.create_task(self._load_model())

    def _load_model_sync(self) -> tuple[Any, bool]:
        """(worker thread) Import scikit-learn, load model.skops, re-verify the fast path."""
        path = self.config.model_dir / modelio.MODEL_FILE
        if self.card.get("modelSha256") not in (None, sha256_file(path)):
            raise WorkloadError(f"{path} does not match the sha256 in its model card")
        model = modelio.load_model(path, self.config.allowed_modules)
        assert self._exported is not None
        batches = fastpath.reference_inputs(self.n_features, _reference_rows(self.config.model_dir))
        agrees = fastpath.verify(model, self._exported.predict, batches)
        classes = getattr(model, "classes_", None)
        if (np.asarray(classes).tolist() if classes is not None else None) != self.classes:
            agrees = False
        return model, agrees

    async def _load_model(self) -> None:
        started = time.perf_counter()
        path = self.config.model_dir / modelio.MODEL_FILE
        try:
            model, agrees = await asyncio.to_thread(self._load_model_sync)
        except Exception as exc:  # noqa: BLE001 - any failure: refuse to serve this model
            message = str(exc) if isinstance(exc, WorkloadError) else f"{type(exc).__name__}: {exc}"
            self.load_error = f"cannot load the model after the fast start: {message}"
            self.ready = False
            log.error("%s; the server is not ready and stops", self.load_error)
            if self.on_load_failure is not None:
                self.on_load_failure()
            return
        import sklearn

        sklearn.set_config(assume_finite=True)  # this thread's config: the server checks itself
        self.model = model
        self.has_proba = self.is_classifier and hasattr(model, "predict_proba")
        if not agrees:
            log.error(
                "the fast path in %s disagrees with model.predict of %s; "
                "serving with model.predict from now on (fast_path: none)",
                self.config.model_dir / fastpath.EXPORT_FILE,
                path,
            )
            self._predict = model.predict
            self.fast_path = "none"
        self.warm_up()  # predict_proba warmed; metadata rebuilt (fast_path, outputs)
        log.info(
            "model %s loaded with scikit-learn in the background in %.2f s; fast path %s",
            path,
            time.perf_counter() - started,
            "re-verified" if agrees else "switched off",
        )

    async def _full_model(self) -> Any:
        """The scikit-learn model, waiting (bounded) for the background load if needed."""
        if self.model is not None:
            return self.model
        task = self._model_task
        if task is not None and self.load_error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self.config.model_wait)
        if self.model is not None:
            return self.model
        raise ClientError(
            503,
            self.load_error
            or f"model {self.name!r} is still loading scikit-learn (needed for this output); "
            "retry shortly",
            {"Retry-After": "1"},
        )

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            resp = await handler(request)
        except ClientError as exc:
            resp = _error(exc.status, exc.message)
            if exc.headers:
                resp.headers.update(exc.headers)
        except web.HTTPRequestEntityTooLarge:
            resp = _error(413, f"request body over the limit of {self.config.max_body_bytes} bytes")
        except web.HTTPException as exc:
            if exc.status == 404:
                message = f"no such path: {request.method} {request.path}"
            elif exc.status == 405:
                message = f"method {request.method} not allowed on {request.path}"
            else:
                message = exc.reason
            resp = _error(exc.status, message)
            if exc.status == 405 and "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error on %s %s", request.method, request.path)
            resp = _error(500, f"internal error: {type(exc).__name__}: {exc}")
        endpoint = self._endpoint.get(request.match_info.route, "other")
        self.metrics.request(endpoint, request.method, resp.status, time.perf_counter() - start)
        return resp

    # ------------------------------------------------------------------ helpers

    def _static_json(self, key: str) -> web.Response:
        return web.Response(body=self._static[key], content_type=JSON_TYPE)

    def _check_model(self, request: web.Request) -> None:
        m = request.match_info
        name = m["model"]
        if name != self.name:
            raise ClientError(404, f"unknown model {name!r}; this server serves {self.name!r}")
        version = m.get("version")
        if version is not None and version != self.version:
            raise ClientError(
                404,
                f"unknown version {version!r} of model {self.name!r}; served: {self.version!r}",
            )

    async def _body(self, request: web.Request) -> bytes:
        body = await request.read()
        if not body:
            raise ClientError(400, "request body is empty; send a JSON object")
        return body

    @staticmethod
    def _loads(body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ClientError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ClientError(400, "request body is not valid JSON: nested too deeply") from None

    async def _json_body(self, request: web.Request) -> Any:
        return self._loads(await self._body(request))

    def _matrix(self, data: Any, rows: int, cols: int, what: str) -> FloatArray:
        """Numbers (flat or nested) -> finite float64 [rows, cols] with n_features columns."""
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise ClientError(
                400, f"{what} must be numbers in a flat or nested list of equal-length rows"
            ) from None
        if arr.size != rows * cols:
            raise ClientError(
                400,
                f"{what} has {arr.size} values but shape [{rows}, {cols}] needs {rows * cols}",
            )
        if cols != self.n_features:
            raise ClientError(
                400, f"model {self.name!r} expects {self.n_features} features, got {cols}"
            )
        if rows == 0:
            raise ClientError(400, f"{what} has no rows")
        x = arr.reshape(rows, cols)
        if not self._all_finite(data, arr.ndim, x):
            raise ClientError(400, f"{what} contains NaN or infinite values")
        return x

    @staticmethod
    def _all_finite(data: Any, ndim: int, x: FloatArray) -> bool:
        if type(data) is list and x.size <= 64:  # small JSON input: cheaper on the list
            try:
                if ndim == 1:
                    return all(map(math.isfinite, data))
                if ndim == 2:
                    return all(map(math.isfinite, itertools.chain.from_iterable(data)))
            except (TypeError, OverflowError):  # numbers given as text, nested deeper, ...
                pass
        return bool(np.isfinite(x).all())

    async def _run_predict(
        self, fn: Callable[[FloatArray], Any], x: FloatArray
    ) -> npt.NDArray[Any]:
        if x.size > OFFLOAD_VALUES:
            loop = asyncio.get_running_loop()
            return np.asarray(await loop.run_in_executor(None, fn, x))
        return np.asarray(fn(x))

    # ------------------------------------------------------------------ health/metadata

    async def live(self, request: web.Request) -> web.StreamResponse:
        return self._static_json("live")

    async def ready_handler(self, request: web.Request) -> web.StreamResponse:
        if not self.ready:
            return _error(503, self.load_error or "model not loaded yet")
        return self._static_json("ready")

    async def server_metadata(self, request: web.Request) -> web.StreamResponse:
        return self._static_json("server")

    async def model_metadata(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        return self._static_json("model")

    async def model_ready(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        if not self.ready:
            return _error(503, self.load_error or f"model {self.name!r} not loaded yet")
        return self._static_json("model_ready")

    async def recent_inputs(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        rows = self.inputs.snapshot()
        return _ok(
            {
                "model_name": self.name,
                "model_version": self.version,
                "feature_names": self.card.get("featureNames") or [],
                "rows": len(rows),
                "total_rows": self.inputs.total,
                "data": rows.tolist(),
            }
        )

    async def v1_model(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        return self._static_json("v1_model")

    def monitoring_summary(self) -> JSONDict:
        """The JSON the operator's built-in monitor reads (see GET .../monitoring)."""
        return {
            "model": self.name,
            "version": self.version,
            "task": self.task,
            "feedback": self.feedback_stats.summary(),
            "drift": self.drift.summary(),
        }

    async def monitoring(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        await self.drift.refresh(self.inputs)
        return _ok(self.monitoring_summary())

    async def metrics_handler(self, request: web.Request) -> web.StreamResponse:
        await self.drift.refresh(self.inputs)
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    # ------------------------------------------------------------------ inference

    def _tensor_data(
        self, tensor: JSONDict, datatype: str, what: str, binary: memoryview | None
    ) -> Any:
        """The input's values: its JSON `data`, or its bytes after the JSON header."""
        params = tensor.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ClientError(400, f"{what} parameters must be an object")
        size = (params or {}).get("binary_data_size")
        if size is None:
            if binary is not None and len(binary):
                raise ClientError(
                    400,
                    f"{len(binary)} bytes follow the JSON header but {what} has no "
                    "binary_data_size parameter",
                )
            data = tensor.get("data")
            if not isinstance(data, list):
                raise ClientError(400, f"{what} data must be a list of numbers")
            return data
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ClientError(400, f"{what} binary_data_size must be a non-negative integer")
        if binary is None:
            raise ClientError(
                400, f"{what} has binary_data_size but the request has no {HEADER_LENGTH} header"
            )
        if size != len(binary):
            raise ClientError(
                400,
                f"{what} binary_data_size is {size} but {len(binary)} bytes follow the JSON header",
            )
        dtype = BINARY_DTYPES[datatype]
        if size % dtype.itemsize:
            raise ClientError(
                400,
                f"{what} has {size} bytes of binary data, not a whole number of {datatype} "
                f"values ({dtype.itemsize} bytes each)",
            )
        return np.frombuffer(binary, dtype=dtype)

    def _parse_v2(
        self, req: Any, binary: memoryview | None = None
    ) -> tuple[FloatArray, str, tuple[tuple[str, bool], ...]]:
        """(features, request id, requested outputs as (name, as binary)) of a V2 request."""
        if not isinstance(req, dict):
            raise ClientError(400, "request body must be a JSON object with 'inputs'")
        inputs = req.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise ClientError(400, "'inputs' must be a non-empty list of tensors")
        if len(inputs) != 1:
            raise ClientError(
                400, f"expected exactly one input tensor [rows, features], got {len(inputs)}"
            )
        tensor = inputs[0]
        if not isinstance(tensor, dict):
            raise ClientError(400, "inputs[0] must be an object with name, shape, datatype, data")
        tname = tensor.get("name")
        what = f"input {tname!r}" if isinstance(tname, str) else "inputs[0]"
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in INPUT_DATATYPES:
            raise ClientError(
                400,
                f"{what} has unsupported datatype {datatype!r}; use one of "
                "FP64, FP32, FP16, INT64, INT32, INT16, INT8, UINT64, UINT32, UINT16, UINT8",
            )
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ClientError(
                400,
                f"{what} shape must be [rows, features] (two non-negative integers), "
                f"got {json.dumps(shape)}",
            )
        data = self._tensor_data(tensor, datatype, what, binary)
        is_list = isinstance(data, list)
        x = self._matrix(data, shape[0], shape[1], f"{what} data" if is_list else what)
        if is_list and datatype in INT_DATATYPES and not np.array_equal(x, np.trunc(x)):
            raise ClientError(400, f"{what} is {datatype} but its data has non-integer values")

        rid = req.get("id")
        if rid is None:
            rid = new_request_id()
        elif not isinstance(rid, str) or not rid:
            raise ClientError(400, "'id' must be a non-empty string")

        params = req.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ClientError(400, "'parameters' must be an object")
        binary_default = (params or {}).get("binary_data_output") is True
        outputs = req.get("outputs")
        if not outputs:
            return x, rid, (("predict", True),) if binary_default else DEFAULT_OUTPUTS
        if not isinstance(outputs, list):
            raise ClientError(400, "'outputs' must be a list of {\"name\": ...} objects")
        names: dict[str, bool] = {}
        for out in outputs:
            oname = out.get("name") if isinstance(out, dict) else None
            if oname == "predict_proba":
                if not self.has_proba:
                    raise ClientError(400, f"model {self.name!r} has no predict_proba output")
            elif oname != "predict":
                raise ClientError(
                    400,
                    f"unknown output {oname!r}; available: "
                    + ("predict, predict_proba" if self.has_proba else "predict"),
                )
            oparams = out.get("parameters")
            if oparams is not None and not isinstance(oparams, dict):
                raise ClientError(400, f"output {oname!r} parameters must be an object")
            oparams = oparams or {}
            if oparams.get("classification"):
                raise ClientError(
                    400,
                    "the classification extension is not supported; request predict_proba",
                )
            if oname not in names:
                names[oname] = oparams.get("binary_data", binary_default) is True
        return x, rid, tuple(names.items())

    def _tensor_bytes(self, arr: npt.NDArray[Any], datatype: str) -> bytes:
        if datatype == "BYTES":  # 4-byte little-endian length, then the UTF-8 bytes
            encoded = [str(v).encode("utf-8") for v in arr.tolist()]
            return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
        return np.ascontiguousarray(arr, dtype=BINARY_DTYPES[datatype]).tobytes()

    async def infer(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        body = await self._body(request)
        binary: memoryview | None = None
        header = request.headers.get(HEADER_LENGTH)
        if header is not None:  # binary tensor data extension: JSON, then raw tensors
            try:
                size = int(header)
            except ValueError:
                size = -1
            if not 0 < size <= len(body):
                raise ClientError(
                    400,
                    f"{HEADER_LENGTH} must be an integer from 1 to the body size "
                    f"({len(body)}), got {header!r}",
                )
            binary = memoryview(body)[size:]
            body = body[:size]
        x, rid, requested = self._parse_v2(self._loads(body), binary)
        if self.load_error is not None:
            raise ClientError(503, self.load_error)
        pred = await self._run_predict(self._predict, x)
        labels = pred.tolist()
        rows = len(labels)
        if requested is DEFAULT_OUTPUTS:  # the common answer, spliced from prebuilt bytes
            self.recent.put(rid, x, labels)
            self.inputs.add(x)
            self.metrics.predictions(labels if self.is_classifier else None, rows)
            body = b"".join(
                (
                    self._head,
                    dumps_compact(rid).encode("utf-8"),
                    self._shape_open,
                    str(rows).encode(),
                    self._data_open,
                    dumps_compact(labels).encode("utf-8"),
                    b"}]}",
                )
            )
            return web.Response(body=body, content_type=JSON_TYPE)
        outputs: list[JSONDict] = []
        chunks: list[bytes] = []
        for oname, as_binary in requested:  # in the order the request named them
            if oname == "predict":
                out: JSONDict = {"name": "predict", "shape": [rows], "datatype": self._predict_dt}
                values: npt.NDArray[Any] = pred
            else:
                model = await self._full_model()
                values = await self._run_predict(model.predict_proba, x)
                out = {"name": "predict_proba", "shape": list(values.shape), "datatype": "FP64"}
            if as_binary:
                raw = self._tensor_bytes(values.ravel(), out["datatype"])
                out["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                out["data"] = labels if oname == "predict" else values.ravel().tolist()
            outputs.append(out)
        self.recent.put(rid, x, labels)
        self.inputs.add(x)
        self.metrics.predictions(labels if self.is_classifier else None, rows)
        payload = {
            "model_name": self.name,
            "model_version": self.version,
            "id": rid,
            "outputs": outputs,
        }
        if not chunks:
            return _ok(payload)
        head = dumps_compact(payload).encode("utf-8")
        return web.Response(
            body=b"".join([head, *chunks]),
            content_type="application/octet-stream",
            headers={HEADER_LENGTH: str(len(head))},
        )

    async def v1_predict(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        req = await self._json_body(request)
        if not isinstance(req, dict):
            raise ClientError(400, "request body must be a JSON object with 'instances'")
        instances = req.get("instances")
        if not isinstance(instances, list) or not instances:
            raise ClientError(400, "'instances' must be a non-empty list of feature rows")
        first = instances[0]
        cols = len(first) if isinstance(first, list) else 1
        x = self._matrix(instances, len(instances), cols, "instances")
        pred = await self._run_predict(self._predict, x)
        labels = pred.tolist()
        self.inputs.add(x)
        self.metrics.predictions(labels if self.is_classifier else None, len(labels))
        return _ok({"predictions": labels})

    # ------------------------------------------------------------------ feedback

    def _label(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, bool | dict | list):
            raise ClientError(400, f"{where} must be a number or a string")
        if not self.is_classifier:
            number = _finite_float(value)
            if number is None:
                raise ClientError(400, f"{where} must be a finite number for a regression model")
            return number
        if self._label_kind in "iu":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or (
                self._class_set is not None and value not in self._class_set
            ):
                raise ClientError(
                    400, f"{where} must be an integer class label, one of {self.classes}"
                )
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if self._class_set is not None and str(value) not in self._class_set:
            raise ClientError(400, f"{where} must be one of the model's classes {self.classes}")
        return str(value)

    def _labels(self, req: JSONDict, rows: int) -> list[Any]:
        if "labels" in req:
            labels = req["labels"]
            if not isinstance(labels, list) or len(labels) != rows:
                raise ClientError(400, f"'labels' must be a list of {rows} labels, one per row")
            return [self._label(v, f"labels[{i}]") for i, v in enumerate(labels)]
        if "label" not in req:
            raise ClientError(400, "feedback needs 'label' (or 'labels', one per row)")
        if rows != 1:
            raise ClientError(
                400, f"that request had {rows} rows; send 'labels' with {rows} values"
            )
        return [self._label(req["label"], "'label'")]

    async def feedback(self, request: web.Request) -> web.StreamResponse:
        self._check_model(request)
        req = await self._json_body(request)
        if not isinstance(req, dict):
            raise ClientError(400, "feedback must be a JSON object")
        rid = req.get("id")
        if "features" in req:
            feats = req["features"]
            if not isinstance(feats, list) or not feats:
                raise ClientError(400, "'features' must be a list of numbers or of rows")
            nested = isinstance(feats[0], list)
            rows = len(feats) if nested else 1
            cols = len(feats[0]) if nested else len(feats)
            x = self._matrix(feats, rows, cols, "'features'")
            labels = self._labels(req, rows)
            preds = np.asarray(self._predict(x)).tolist()
            if rid is not None and not isinstance(rid, str):
                raise ClientError(400, "'id' must be a string")
            source = "features"
        elif rid is not None:
            if not isinstance(rid, str) or not rid:
                raise ClientError(400, "'id' must be a non-empty string")
            if self.recent.was_consumed(rid):
                raise ClientError(409, f"feedback for request {rid!r} was already recorded")
            item = self.recent.get(rid)
            if item is None:
                raise ClientError(
                    404,
                    f"unknown request id {rid!r} (never seen, or older than the last "
                    f"{self.recent.max_requests} predictions); send 'features' with the label",
                )
            x, preds = item
            labels = self._labels(req, len(preds))
            source = "id"
        else:
            raise ClientError(400, "feedback needs 'id' (of an earlier infer) or 'features'")

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = []
        for i, (row, label, pred) in enumerate(zip(x.tolist(), labels, preds, strict=True)):
            record = {
                "features": row,
                "label": label,
                "prediction": pred,
                "id": rid,
                "row": i,
                "source": source,
                "model": self.name,
                "version": self.version,
                "time": now,
            }
            lines.append(dumps_compact(record))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.feedback_log.append, lines)
        except OSError as exc:
            log.error("cannot record feedback in %s: %s", self.feedback_log.path, exc)
            return _error(503, f"cannot record feedback: {exc.strerror or exc}")
        if source == "id" and isinstance(rid, str):
            self.recent.consume(rid)
        correct, sq, ab = self.feedback_stats.add(labels, preds)
        if self.is_classifier:
            if correct:
                self.metrics.feedback("correct", correct)
            if len(labels) - correct:
                self.metrics.feedback("incorrect", len(labels) - correct)
        else:
            self.metrics.feedback("recorded", len(labels))
            self.metrics.regression_errors(sq, ab)
        return _ok({"recorded": len(labels), "id": rid, "file": self.feedback_log.path.name})


# ----------------------------------------------------------------------------- start


def _package_version() -> str:
    try:
        return importlib.metadata.version("modelcycle")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _checked_card(config: ServeConfig) -> JSONDict:
    """The model card, after checking the version, nFeatures and model.skops' sha256."""
    if not SAFE_VERSION.match(config.version):
        raise WorkloadError(f"--version {config.version!r} is not a safe file name")
    card = modelio.load_card(config.model_dir)
    if card.get("version") != config.version:
        raise WorkloadError(
            f"{config.model_dir} holds model version {card.get('version')!r}, "
            f"not --version {config.version!r}"
        )
    if not isinstance(card.get("nFeatures"), int):
        raise WorkloadError(f"model card in {config.model_dir} has no nFeatures")
    path = config.model_dir / modelio.MODEL_FILE
    if not path.is_file():
        raise WorkloadError(f"model file not found: {path}")
    digest = sha256_file(path)
    if card.get("modelSha256") not in (None, digest):
        raise WorkloadError(f"{path} does not match the sha256 in its model card")
    return card


def load_server(config: ServeConfig, card: JSONDict | None = None) -> ModelServer:
    """Check the card and model file (version, sha256, trusted types), load, warm up."""
    if card is None:
        card = _checked_card(config)
    model = modelio.load_model(config.model_dir / modelio.MODEL_FILE, config.allowed_modules)
    server = ModelServer(model, card, config)
    server.restore_feedback()
    if config.fast_path:
        server.enable_fast_path(_reference_rows(config.model_dir))
    server.warm_up()
    return server


def fast_start_server(config: ServeConfig, card: JSONDict | None = None) -> ModelServer | None:
    """A server answering from fastpath.npz with numpy alone, or None: start normally.

    None when the fast path is switched off, the card names no exported fast path, or the
    file is refused (sha256 mismatch, malformed; logged as an error). The model itself
    (scikit-learn, model.skops through modelio's trust policy) loads once the app starts.
    """
    if card is None:
        card = _checked_card(config)
    sha = card.get("fastPathSha256")
    if not config.fast_path or not isinstance(sha, str):
        return None
    path = config.model_dir / fastpath.EXPORT_FILE
    try:
        exported = fastpath.load_export(path, sha)
        if exported.n_features != card["nFeatures"]:
            raise fastpath.ExportError(
                f"it has {exported.n_features} features, the card {card['nFeatures']}"
            )
        is_classifier = str(card.get("task", "classification")) == "classification"
        classes = exported.classes.tolist() if exported.classes is not None else None
        if (classes is not None) != is_classifier or (
            classes is not None and card.get("classes") not in (None, classes)
        ):
            raise fastpath.ExportError("its classes do not match the model card")
    except fastpath.ExportError as exc:
        log.error(
            "refusing the fast start from %s: %s; starting with scikit-learn and %s instead",
            path,
            exc,
            modelio.MODEL_FILE,
        )
        return None
    server = ModelServer(None, card, config, exported)
    server.restore_feedback()
    server.warm_up()
    return server


def start_server(config: ServeConfig) -> ModelServer:
    """The fast start when the model has a valid fastpath.npz, else the full load."""
    card = _checked_card(config)
    server = fast_start_server(config, card)
    if server is not None:
        return server
    import sklearn

    sklearn.set_config(assume_finite=True)  # the server checks finiteness itself
    return load_server(config, card)


def _reference_rows(model_dir: Path, limit: int = 2000) -> list[FloatArray]:
    """The cycle's own held-out and training rows (when present) to verify the fast path."""
    rows: list[FloatArray] = []
    for name in ("test.npz", "train.npz"):
        path = model_dir.parent / "data" / name
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as npz:
                rows.append(np.asarray(npz["X"][:limit], dtype=np.float64))
        except (OSError, ValueError, KeyError):
            continue
    return rows


def run(config: ServeConfig, host: str, port: int, on_stop: Callable[[], None]) -> None:
    started = time.perf_counter()
    server = start_server(config)
    # A failed background load (after a fast start) stops the server like a failed start.
    server.on_load_failure = lambda: signal.raise_signal(signal.SIGTERM)
    server.load_after_listen = True  # nothing of scikit-learn before the port is open
    app = server.app()

    def announce(*_: Any, **__: Any) -> None:  # run_app calls this once the port is open
        print(
            f"modelcycle-trainer serve: model {config.name} version {config.version} ready on "
            f"http://{host}:{port} ({time.perf_counter() - started:.2f} s"
            + (
                ", fast start: scikit-learn loads in the background)"
                if server.model is None
                else ")"
            ),
            file=sys.stderr,
            flush=True,
        )
        server.begin_model_load()

    async def stopped(_: web.Application) -> None:
        on_stop()

    app.on_cleanup.append(stopped)
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            access_log=None,
            print=announce,
            shutdown_timeout=10.0,
            handle_signals=True,
        )
    except OSError as exc:
        raise WorkloadError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if server.load_error is not None:
        raise WorkloadError(server.load_error)
