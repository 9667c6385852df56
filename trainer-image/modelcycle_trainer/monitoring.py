"""Live monitoring of a served model: accuracy/error from feedback, input drift.

Purpose: the numbers the Prometheus rules and the operator's built-in monitor act on.
- `LiveFeedback`: correct / incorrect counts (classifiers) or squared / absolute error
  sums (regressors) over all ground-truth feedback for one model version. The server
  rebuilds it at start from `ARTIFACTS/feedback/<version>.jsonl` (`load_feedback`; every
  record holds the label and the prediction), so live accuracy survives a restart.
- `DriftMonitor`: compares the server's recent input rows (its bounded ring buffer)
  with the training profile written by `collect` (`cycles/<N>/data/profile.json`: a
  seeded sample of at most 1000 training rows, each feature marked numeric or
  categorical). Per feature: a two-sample Kolmogorov-Smirnov test for numeric features,
  a chi-squared test of homogeneity (2 x categories contingency table, no continuity
  correction; categories the reference never saw get their own column) for categorical
  ones. A feature drifts when p < pValue / n_features (Bonferroni); the dataset drifts
  when at least `fraction` (0.5) of its features do. PSI (10 reference-quantile bins for
  numeric, one bin per category plus one for unseen values; empty bins count as 1e-4) is
  reported beside it, read with the usual 0.1 (moderate) / 0.2 (major) thresholds.
- `MonitoringCollector`: exposes both as `modelcycle_live_*`, `modelcycle_feature_drift_*`,
  `modelcycle_feature_drifted`, `modelcycle_input_drifted` and
  `modelcycle_drift_window_rows` gauges, read from the last computed state.

Speed: nothing here runs per prediction. Drift is computed lazily, when `/metrics` or
the monitoring endpoint asks and the last computation is older than `interval` seconds
(default 5) and new rows arrived since; the computation (and the first import of
scipy.stats, and the reading of profile.json) runs in a worker thread, one at a time.
A scrape reads the cached result otherwise. The reference side (sorted samples, PSI bin
edges and proportions, category counts) is prepared once.

Limits: the window is this replica's last `recent_inputs` rows (1000 by default), not a
time window. No drift value is given below `min_rows` (30) rows. Feedback counters of
other replicas sharing the feedback file are seen only at this replica's next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelcycle_trainer.common import JSONDict

log = logging.getLogger("modelcycle_trainer.monitoring")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_P_VALUE = 0.05
DEFAULT_FRACTION = 0.5
DEFAULT_MIN_ROWS = 30
DEFAULT_INTERVAL = 5.0
PSI_MODERATE = 0.1
PSI_MAJOR = 0.2
PSI_BINS = 10
PSI_EPSILON = 1e-4
EXACT_KS_MAX = 10_000  # n_ref * n_cur up to this: exact KS p-value; above: asymptotic


# ----------------------------------------------------------------------------- feedback


@dataclass
class LiveFeedback:
    """Running feedback outcome of one model version."""

    is_classifier: bool
    samples: int = 0
    correct: int = 0
    squared_error: float = 0.0
    absolute_error: float = 0.0

    def add(self, labels: Sequence[Any], predictions: Sequence[Any]) -> tuple[int, float, float]:
        """Count one batch; returns (correct, squared error sum, absolute error sum)."""
        n = len(labels)
        if self.is_classifier:
            correct = sum(1 for a, b in zip(labels, predictions, strict=True) if a == b)
            self.samples += n
            self.correct += correct
            return correct, 0.0, 0.0
        errs = np.asarray(labels, dtype=np.float64) - np.asarray(predictions, dtype=np.float64)
        sq, ab = float(np.sum(errs * errs)), float(np.sum(np.abs(errs)))
        self.samples += n
        self.squared_error += sq
        self.absolute_error += ab
        return 0, sq, ab

    @property
    def accuracy(self) -> float | None:
        if not self.is_classifier or self.samples == 0:
            return None
        return self.correct / self.samples

    @property
    def rmse(self) -> float | None:
        if self.is_classifier or self.samples == 0:
            return None
        return math.sqrt(self.squared_error / self.samples)

    @property
    def mae(self) -> float | None:
        if self.is_classifier or self.samples == 0:
            return None
        return self.absolute_error / self.samples

    def summary(self) -> JSONDict:
        return {
            "samples": self.samples,
            "correct": self.correct if self.is_classifier else None,
            "accuracy": self.accuracy,
            "rmse": self.rmse,
            "mae": self.mae,
        }


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_feedback(path: Path, version: str, is_classifier: bool) -> tuple[LiveFeedback, int]:
    """Rebuild the counters from a feedback file; returns them and the lines skipped.

    A record counts when it is a JSON object of this `version` (or without one) with a
    `label` and a `prediction` (finite numbers for a regressor). A missing file is no
    feedback yet.
    """
    live = LiveFeedback(is_classifier)
    skipped = 0
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return live, 0
    labels: list[Any] = []
    preds: list[Any] = []
    with fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                skipped += 1
                continue
            if not isinstance(rec, dict) or rec.get("version", version) != version:
                skipped += 1
                continue
            label, pred = rec.get("label"), rec.get("prediction")
            if label is None or pred is None:
                skipped += 1
                continue
            if not is_classifier and not (_finite_number(label) and _finite_number(pred)):
                skipped += 1
                continue
            labels.append(label)
            preds.append(pred)
    if labels:
        live.add(labels, preds)
    return live, skipped


# ----------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class FeatureReference:
    """The training side of one feature, prepared once."""

    name: str
    kind: str  # "numeric" (KS) or "categorical" (chi2)
    sample: FloatArray  # sorted reference sample
    edges: FloatArray  # numeric: interior PSI bin edges
    categories: FloatArray  # categorical: sorted distinct reference values
    counts: IntArray  # reference counts per PSI bin / per category
    proportions: FloatArray  # PSI reference proportions (categorical: + unseen bin)

    @property
    def test(self) -> str:
        return "ks" if self.kind == "numeric" else "chi2"


@dataclass(frozen=True)
class FeatureDrift:
    pvalue: float
    psi: float
    drifted: bool
    test: str

    @property
    def psi_level(self) -> str:
        if self.psi >= PSI_MAJOR:
            return "major"
        return "moderate" if self.psi >= PSI_MODERATE else "none"


@dataclass(frozen=True)
class DriftResult:
    rows: int
    features: dict[str, FeatureDrift]
    drifted: bool
    computed_at: float  # unix time


def _proportions(counts: npt.NDArray[Any]) -> FloatArray:
    total = float(np.sum(counts))
    props = np.asarray(counts, dtype=np.float64) / (total if total > 0 else 1.0)
    out: FloatArray = np.maximum(props, PSI_EPSILON)
    return out


def psi(reference: FloatArray, current: FloatArray) -> float:
    """Population stability index of two proportion vectors (already floored)."""
    return float(np.sum((current - reference) * np.log(current / reference)))


def prepare_feature(name: str, kind: str, sample: FloatArray) -> FeatureReference:
    values = np.sort(np.asarray(sample, dtype=np.float64))
    if len(values) == 0:
        raise ValueError(f"feature {name!r} has an empty reference sample")
    empty = np.empty(0, dtype=np.float64)
    if kind == "categorical":
        cats, counts = np.unique(values, return_counts=True)
        counts64 = counts.astype(np.int64)
        props = _proportions(np.append(counts64, 0))
        return FeatureReference(name, kind, values, empty, cats, counts64, props)
    qs = np.quantile(values, np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1])
    edges = np.unique(qs)
    counts64 = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    counts64 = counts64.astype(np.int64)
    return FeatureReference(name, "numeric", values, edges, empty, counts64, _proportions(counts64))


def load_reference(profile_path: Path, n_features: int) -> list[FeatureReference]:
    """The per-feature reference from collect's profile.json (ValueError/OSError if unusable)."""
    with profile_path.open("rb") as fh:
        profile = json.load(fh)
    stats = profile.get("featureStats") if isinstance(profile, dict) else None
    if not isinstance(stats, list) or len(stats) != n_features:
        raise ValueError(
            f"{profile_path} describes {len(stats) if isinstance(stats, list) else 'no'} "
            f"features; the model takes {n_features}"
        )
    refs: list[FeatureReference] = []
    for j, entry in enumerate(stats):
        if not isinstance(entry, dict) or not isinstance(entry.get("sample"), list):
            raise ValueError(f"{profile_path}: feature {j} has no reference sample")
        name = str(entry.get("name") or f"f{j}")
        if any(r.name == name for r in refs):  # labels must be unique
            name = f"{name}#{j}"
        kind = "categorical" if entry.get("kind") == "categorical" else "numeric"
        refs.append(prepare_feature(name, kind, np.asarray(entry["sample"], dtype=np.float64)))
    return refs


def _ks_pvalue(ref: FeatureReference, col: FloatArray) -> float:
    from scipy import stats  # lazily: ~0.8 s to import, and only needed here

    method = "exact" if len(ref.sample) * len(col) <= EXACT_KS_MAX else "asymp"
    return float(stats.ks_2samp(ref.sample, col, method=method).pvalue)


def _categorical(ref: FeatureReference, col: FloatArray) -> tuple[float, float]:
    from scipy import stats

    values, counts = np.unique(col, return_counts=True)
    idx = np.searchsorted(ref.categories, values)
    idx_clipped = np.minimum(idx, len(ref.categories) - 1)
    known = ref.categories[idx_clipped] == values
    cur = np.zeros(len(ref.categories), dtype=np.int64)
    np.add.at(cur, idx_clipped[known], counts[known])
    unseen = counts[~known]
    psi_value = psi(ref.proportions, _proportions(np.append(cur, int(unseen.sum()))))
    table = np.vstack(
        [
            np.concatenate([ref.counts, np.zeros(len(unseen), dtype=np.int64)]),
            np.concatenate([cur, unseen.astype(np.int64)]),
        ]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0, psi_value  # one value on both sides: nothing to test
    res = stats.chi2_contingency(table, correction=False)
    return float(res.pvalue), psi_value


def compute_drift(
    refs: Sequence[FeatureReference],
    window: FloatArray,
    p_value: float = DEFAULT_P_VALUE,
    fraction: float = DEFAULT_FRACTION,
) -> DriftResult:
    """Test every feature of `window` (rows x features) against its reference."""
    threshold = p_value / max(len(refs), 1)  # Bonferroni
    out: dict[str, FeatureDrift] = {}
    for j, ref in enumerate(refs):
        col = np.ascontiguousarray(window[:, j], dtype=np.float64)
        if ref.kind == "numeric":
            pv = _ks_pvalue(ref, col)
            bins = np.searchsorted(ref.edges, col, side="right")
            cur = np.bincount(bins, minlength=len(ref.edges) + 1)
            psi_value = psi(ref.proportions, _proportions(cur))
        else:
            pv, psi_value = _categorical(ref, col)
        if not math.isfinite(pv):
            pv = 1.0
        out[ref.name] = FeatureDrift(pv, psi_value, pv < threshold, ref.test)
    n_drifted = sum(1 for f in out.values() if f.drifted)
    drifted = bool(out) and n_drifted >= fraction * len(out)
    return DriftResult(len(window), out, drifted, time.time())


class Window(Protocol):
    """The live side: a bounded buffer of recent input rows."""

    @property
    def count(self) -> int: ...

    @property
    def total(self) -> int: ...

    def snapshot(self) -> FloatArray: ...


class DriftMonitor:
    """Lazily recomputed drift of a `Window` against the training profile."""

    def __init__(
        self,
        profile_path: Path,
        n_features: int,
        *,
        p_value: float = DEFAULT_P_VALUE,
        fraction: float = DEFAULT_FRACTION,
        min_rows: int = DEFAULT_MIN_ROWS,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.profile_path = profile_path
        self.n_features = n_features
        self.p_value = p_value
        self.fraction = fraction
        self.min_rows = min_rows
        self.interval = interval
        self.rows = 0  # rows of the last computation (below min_rows: rows buffered)
        self.result: DriftResult | None = None
        self.reason: str | None = f"0 of the {min_rows} rows needed"
        self.computations = 0
        self._refs: list[FeatureReference] | None = None
        self._disabled = False
        self._total_at = -1
        self._monotonic_at = -math.inf
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def _prepare_and_compute(self, window: FloatArray) -> DriftResult | None:
        if self._refs is None:
            try:
                self._refs = load_reference(self.profile_path, self.n_features)
            except FileNotFoundError:
                self.disable(f"no training profile at {self.profile_path}")
                return None
            except (OSError, ValueError, TypeError) as exc:
                self.disable(f"unusable training profile {self.profile_path}: {exc}")
                return None
        return compute_drift(self._refs, window, self.p_value, self.fraction)

    def disable(self, reason: str, warn: bool = True) -> None:
        log.log(logging.WARNING if warn else logging.INFO, "input drift disabled: %s", reason)
        self._disabled = True
        self.reason = reason

    async def refresh(self, window: Window) -> None:
        """Bring the state up to date, at most once every `interval` seconds."""
        if self._disabled:
            return
        async with self._loop_lock():
            count, total = window.count, window.total
            if count < self.min_rows:
                self.rows, self.result = count, None
                self.reason = f"{count} of the {self.min_rows} rows needed"
                return
            fresh = time.monotonic() - self._monotonic_at < self.interval
            if self._total_at >= 0 and (total == self._total_at or fresh):
                return  # nothing new, or the last run (or failure) is recent enough
            rows = window.snapshot()
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(None, self._prepare_and_compute, rows)
            except Exception as exc:
                log.exception("input drift computation failed")
                self._total_at, self._monotonic_at = total, time.monotonic()
                self.reason = f"drift computation failed: {type(exc).__name__}: {exc}"
                return
            if result is None:
                return
            self.computations += 1
            self._total_at, self._monotonic_at = total, time.monotonic()
            self.rows, self.result, self.reason = result.rows, result, None

    def summary(self) -> JSONDict:
        res = self.result
        features: JSONDict = {}
        if res is not None:
            features = {
                name: {
                    "pvalue": f.pvalue,
                    "psi": f.psi,
                    "drifted": f.drifted,
                    "test": f.test,
                    "psiLevel": f.psi_level,
                }
                for name, f in res.features.items()
            }
        n = len(res.features) if res is not None else 0
        return {
            "rows": self.rows,
            "drifted": res.drifted if res is not None else None,
            "driftedFeatures": (
                sum(1 for f in res.features.values() if f.drifted) if res is not None else None
            ),
            "features": features,
            "pValueThreshold": self.p_value,
            "bonferroni": True,
            "featurePValueThreshold": self.p_value / n if n else None,
            "driftFraction": self.fraction,
            "psiThresholds": {"moderate": PSI_MODERATE, "major": PSI_MAJOR},
            "minRows": self.min_rows,
            "computedAt": (
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(res.computed_at))
                if res is not None
                else None
            ),
            "reason": self.reason,
        }


# ----------------------------------------------------------------------------- metrics


class MonitoringCollector(Collector):
    """Gauges read from the live state at scrape time (nothing computed here)."""

    def __init__(
        self, name: str, version: str, feedback: Callable[[], LiveFeedback], drift: DriftMonitor
    ) -> None:
        self._mv = [name, version]
        self._feedback = feedback
        self._drift = drift

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        mv = ["model", "version"]
        mvf = [*mv, "feature"]
        live = self._feedback()
        samples = GaugeMetricFamily(
            "modelcycle_live_feedback_samples",
            "Feedback rows the live accuracy / error is computed on (this model version).",
            labels=mv,
        )
        samples.add_metric(self._mv, live.samples)
        yield samples
        if live.is_classifier:
            acc = GaugeMetricFamily(
                "modelcycle_live_accuracy",
                "correct / (correct + incorrect) over the feedback of this model version; "
                "absent until the first feedback.",
                labels=mv,
            )
            if live.accuracy is not None:
                acc.add_metric(self._mv, live.accuracy)
            yield acc
        else:
            rmse = GaugeMetricFamily(
                "modelcycle_live_rmse",
                "Root mean squared error over the feedback of this model version.",
                labels=mv,
            )
            mae = GaugeMetricFamily(
                "modelcycle_live_mae",
                "Mean absolute error over the feedback of this model version.",
                labels=mv,
            )
            if live.rmse is not None and live.mae is not None:
                rmse.add_metric(self._mv, live.rmse)
                mae.add_metric(self._mv, live.mae)
            yield rmse
            yield mae

        drift = self._drift
        res = drift.result
        pvalue = GaugeMetricFamily(
            "modelcycle_feature_drift_pvalue",
            "p-value of the drift test of a feature (KS numeric, chi2 categorical) of the "
            "recent inputs against the training profile.",
            labels=mvf,
        )
        psi_family = GaugeMetricFamily(
            "modelcycle_feature_drift_psi",
            "Population stability index of a feature (0.1 moderate, 0.2 major).",
            labels=mvf,
        )
        drifted = GaugeMetricFamily(
            "modelcycle_feature_drifted",
            "1 when the feature's p-value is below the Bonferroni-adjusted threshold.",
            labels=mvf,
        )
        dataset = GaugeMetricFamily(
            "modelcycle_input_drifted",
            "1 when at least half of the features drifted.",
            labels=mv,
        )
        rows = GaugeMetricFamily(
            "modelcycle_drift_window_rows",
            "Recent input rows the drift was computed on (drift values need at least "
            f"{drift.min_rows}).",
            labels=mv,
        )
        rows.add_metric(self._mv, drift.rows)
        if res is not None:
            for fname, f in res.features.items():
                labels = [*self._mv, fname]
                pvalue.add_metric(labels, f.pvalue)
                psi_family.add_metric(labels, f.psi)
                drifted.add_metric(labels, 1.0 if f.drifted else 0.0)
            dataset.add_metric(self._mv, 1.0 if res.drifted else 0.0)
        yield pvalue
        yield psi_family
        yield drifted
        yield dataset
        yield rows
