"""`collect`: turn the spec's `data` section into a versioned, hashed train/test snapshot.

Purpose: read one source — a bundled scikit-learn dataset (iris, wine, breast_cancer,
digits, diabetes; no download), a CSV/Parquet file over http(s), or a CSV/Parquet file
relative to the artifact volume — validate it, optionally fold in labelled feedback,
split it (seeded; stratified for classification) and write
`cycles/<N>/data/{train.npz,test.npz,profile.json,snapshot.json}`.

Decisions and limits:
- Neither scikit-learn nor scipy is imported (it took most of this step's time): the
  bundled datasets are parsed from scikit-learn's own data files (found with
  `importlib.util.find_spec`, which does not import it) the way its `load_<name>()`
  functions parse them, to the same X, y and names; the split is numpy's. The
  stratified split holds out each class in proportion (largest remainder), keeps every
  class in both splits when both have room for every class, and is deterministic for a
  seed; it is not scikit-learn's `train_test_split`, so its rows (and data hashes) differ.
- CSV is streamed into one float64 block preallocated from the line count, a few
  thousand rows at a time (about 8 bytes per cell; a text column is read again on its own
  only when it is the target), so memory is a small multiple of the file, not of its cells
  as Python strings.
- Features must already be numeric. Non-numeric feature columns are an error naming
  them (no silent encoding); so are missing/non-finite feature values (named, with
  counts). A missing target value is an error too.
- CSV: comma-separated, first row is the header, UTF-8 (a BOM is accepted). The
  tokens "", NA, NaN, null, None, N/A count as missing.
- Parquet is read with pyarrow (a dependency of the workload); without it the error says so.
- URLs: http(s) only (redirects too), 30 s timeout, 200 MB cap. The source description
  written to snapshot.json drops user-info and the query string (they may hold secrets).
  Local files are not size-capped.
- task "auto": classification when the target is integer-valued or a string with at most
  20 distinct values (bundled datasets: their known task), otherwise regression.
- Feedback (`includeFeedback`): every `feedback/*.jsonl` record `{"features": [...],
  "label": y}` whose feature count matches is appended to the TRAINING split only. The
  held-out test split is always the source's own split, so scores of successive cycles
  on the same source stay comparable. Malformed lines and mismatched rows are skipped
  and counted (`feedbackSkipped`). Feedback accumulates: each cycle folds all of it.
- The drift reference in profile.json is the training split (what the model saw):
  per-feature statistics and a seeded sample of up to 1000 rows (same rows for every
  feature). A feature with at most 10 distinct values is marked "categorical" (with
  its category counts, for chi-squared); others "numeric" (for Kolmogorov-Smirnov).
"""

from __future__ import annotations

import csv
import decimal
import functools
import gzip
import importlib.util
import io
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from modelcycle_trainer.common import (
    JSONDict,
    UsageError,
    WorkloadError,
    atomic_write_with,
    data_dir,
    data_hash,
    feedback_dir,
    write_json,
)

BUILTIN_DATASETS: dict[str, str] = {
    "iris": "classification",
    "wine": "classification",
    "breast_cancer": "classification",
    "digits": "classification",
    "diabetes": "regression",
}
TASKS = ("auto", "classification", "regression")
FORMATS = ("csv", "parquet")
URL_TIMEOUT_SECONDS = 30.0
URL_MAX_BYTES = 200 * 1024 * 1024
AUTO_MAX_CLASSES = 20
CATEGORICAL_MAX_DISTINCT = 10
REFERENCE_SAMPLE_ROWS = 1000
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a"})

FloatArray = npt.NDArray[np.float64]


# ----------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class DataSpec:
    kind: str  # builtin | url | file
    location: str  # dataset name, URL or relative path
    fmt: str  # csv | parquet ("" for builtin)
    target: str
    task: str
    test_fraction: float
    seed: int
    include_feedback: bool


def parse_data_spec(raw: Any) -> DataSpec:
    """Validate the spec's `data` object (as decoded JSON)."""
    if not isinstance(raw, dict):
        raise UsageError("--data must be a JSON object")
    sources = [k for k in ("builtin", "url", "file") if raw.get(k) is not None]
    if len(sources) != 1:
        found = ", ".join(sources) if sources else "none"
        raise WorkloadError(f"data needs exactly one of builtin, url, file (found: {found})")
    kind = sources[0]
    src = raw[kind]
    if not isinstance(src, dict):
        raise WorkloadError(f"data.{kind} must be an object")
    fmt = ""
    if kind == "builtin":
        location = src.get("name")
        if location not in BUILTIN_DATASETS:
            known = ", ".join(BUILTIN_DATASETS)
            raise WorkloadError(f"unknown builtin dataset {location!r}; known: {known}")
    else:
        key = "url" if kind == "url" else "path"
        location = src.get(key)
        if not isinstance(location, str) or not location.strip():
            raise WorkloadError(f"data.{kind}.{key} must be a non-empty string")
        fmt = src.get("format") or _format_from_name(location)
        if fmt not in FORMATS:
            raise WorkloadError(f"data.{kind}.format must be csv or parquet, got {fmt!r}")
        if kind == "url":
            scheme = urllib.parse.urlsplit(location).scheme.lower()
            if scheme not in ("http", "https"):
                raise WorkloadError(f"data.url.url must be http(s), got scheme {scheme!r}")
    target = raw.get("target", "target")
    if not isinstance(target, str) or not target:
        raise WorkloadError("data.target must be a non-empty string")
    task = raw.get("task", "auto")
    if task not in TASKS:
        raise WorkloadError(f"data.task must be one of {', '.join(TASKS)}, got {task!r}")
    frac = raw.get("testFraction", 0.25)
    if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0.05 <= frac <= 0.9:
        raise WorkloadError(f"data.testFraction must be a number in 0.05..0.9, got {frac!r}")
    seed = raw.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1:
        raise WorkloadError(f"data.seed must be an integer in 0..2^31-1, got {seed!r}")
    include = raw.get("includeFeedback", True)
    if not isinstance(include, bool):
        raise WorkloadError(f"data.includeFeedback must be true or false, got {include!r}")
    return DataSpec(kind, str(location), str(fmt), target, task, float(frac), seed, include)


def _format_from_name(location: str) -> str:
    path = urllib.parse.urlsplit(location).path if "://" in location else location
    return "parquet" if path.lower().endswith((".parquet", ".pq")) else "csv"


def describe_source(spec: DataSpec) -> JSONDict:
    if spec.kind == "builtin":
        return {"kind": "builtin", "name": spec.location}
    if spec.kind == "url":
        return {"kind": "url", "url": redact_url(spec.location), "format": spec.fmt}
    return {"kind": "file", "path": spec.location, "format": spec.fmt}


def redact_url(url: str) -> str:
    """Drop user-info and query/fragment: they may carry credentials or signed tokens."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    suffix = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + suffix


# ----------------------------------------------------------------------------- table


#: Rows converted to float at a time: bounds the Python objects alive while parsing.
CSV_CHUNK_ROWS = 4096


@dataclass
class TextColumn:
    """A CSV column that is not numeric: its first offending value, and a way to read it."""

    first_bad: str
    read: Callable[[], list[str]]


@dataclass
class Table:
    """Column-oriented raw data: names and one column per name.

    A column is a sequence of raw values, a float array (a CSV's numeric column; missing
    values are NaN), or a TextColumn (a CSV column that did not parse as numbers).
    """

    columns: list[str]
    values: list[Any]
    known_task: str | None = None  # for bundled datasets' "target"
    class_names: list[str] | None = None
    n_rows: int | None = None
    block: FloatArray | None = None  # a CSV's columns side by side (rows x columns)

    @property
    def rows(self) -> int:
        if self.n_rows is not None:
            return self.n_rows
        return len(self.values[0]) if self.values else 0


# ----------------------------------------------------------------------------- bundled data

_BREAST_CANCER_BASE = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
)
#: Feature names as scikit-learn's loaders give them (they are in its code, not its files).
BUILTIN_FEATURE_NAMES: dict[str, list[str]] = {
    "iris": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
    "wine": [
        "alcohol",
        "malic_acid",
        "ash",
        "alcalinity_of_ash",
        "magnesium",
        "total_phenols",
        "flavanoids",
        "nonflavanoid_phenols",
        "proanthocyanins",
        "color_intensity",
        "hue",
        "od280/od315_of_diluted_wines",
        "proline",
    ],
    "breast_cancer": [
        *(f"mean {b}" for b in _BREAST_CANCER_BASE),
        *(f"{b} error" for b in _BREAST_CANCER_BASE),
        *(f"worst {b}" for b in _BREAST_CANCER_BASE),
    ],
    "digits": [f"pixel_{r}_{c}" for r in range(8) for c in range(8)],
    "diabetes": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"],
}
#: The header-described CSV files (first row: n_samples, n_features, class names...).
_HEADED_CSV = {"iris": "iris.csv", "wine": "wine_data.csv", "breast_cancer": "breast_cancer.csv"}


def sklearn_data_dir() -> Path:
    """scikit-learn's bundled data directory, found without importing scikit-learn."""
    found = importlib.util.find_spec("sklearn")
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for location in locations:
        path = Path(location) / "datasets" / "data"
        if path.is_dir():
            return path
    raise WorkloadError("the builtin datasets need scikit-learn's data files, which are missing")


def _headed_csv(path: Path) -> tuple[FloatArray, npt.NDArray[np.int64], list[str]]:
    """What sklearn.datasets.load_csv_data returns: data, integer target, class names."""
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        n_samples, n_features = int(head[0]), int(head[1])
        data = np.empty((n_samples, n_features), dtype=np.float64)
        target = np.empty(n_samples, dtype=np.int64)
        for i, row in enumerate(reader):
            data[i] = np.asarray(row[:-1], dtype=np.float64)
            target[i] = int(row[-1])
    return data, target, [str(n) for n in head[2:]]


def _gz_text(path: Path, delimiter: str | None) -> FloatArray:
    with gzip.open(path, mode="rt", encoding="utf-8") as fh:
        return np.loadtxt(fh, delimiter=delimiter, dtype=np.float64)


def _scale_like_sklearn(data: FloatArray) -> FloatArray:
    """sklearn.preprocessing.scale(data) then / sqrt(n): load_diabetes(scaled=True)."""
    mean = np.nanmean(data, axis=0)
    std = np.nanstd(data, axis=0)
    data -= mean
    mean_1 = np.nanmean(data, axis=0)
    if not np.allclose(mean_1, 0):
        data -= mean_1
    std[std < 10 * np.finfo(std.dtype).eps] = 1.0
    data /= std
    mean_2 = np.nanmean(data, axis=0)
    if not np.allclose(mean_2, 0):
        data -= mean_2
    data /= data.shape[0] ** 0.5
    return data


def read_builtin(name: str) -> tuple[FloatArray, npt.NDArray[Any], list[str], list[str] | None]:
    """(X, y, feature names, class names) of a bundled dataset, as sklearn's load_<name>()."""
    root = sklearn_data_dir()
    try:
        class_names: list[str] | None
        y: npt.NDArray[Any]
        if name in _HEADED_CSV:
            x, y, class_names = _headed_csv(root / _HEADED_CSV[name])
        elif name == "digits":
            both = _gz_text(root / "digits.csv.gz", ",")
            x, y = np.ascontiguousarray(both[:, :-1]), both[:, -1].astype(np.int64)
            class_names = [str(i) for i in range(10)]
        else:  # diabetes
            x = _scale_like_sklearn(_gz_text(root / "diabetes_data_raw.csv.gz", None))
            y = _gz_text(root / "diabetes_target.csv.gz", None)
            class_names = None
    except (OSError, ValueError, IndexError, StopIteration) as exc:
        raise WorkloadError(f"cannot read the builtin dataset {name}: {exc}") from None
    return x, y, list(BUILTIN_FEATURE_NAMES[name]), class_names


def load_builtin(name: str) -> Table:
    x, y, names, class_names = read_builtin(name)
    if len(names) != x.shape[1]:
        names = [f"feature_{i}" for i in range(x.shape[1])]
    values: list[Any] = [x[:, i] for i in range(x.shape[1])]
    values.append(y)
    if BUILTIN_DATASETS[name] != "classification":
        class_names = None
    return Table([*names, "target"], values, BUILTIN_DATASETS[name], class_names)


def fetch_url(url: str, max_bytes: int = URL_MAX_BYTES) -> bytes:
    shown = redact_url(url)
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    req = urllib.request.Request(  # noqa: S310 - scheme checked in parse_data_spec
        url, headers={"User-Agent": "modelcycle-trainer", "Accept": "*/*"}
    )
    try:
        with opener.open(req, timeout=URL_TIMEOUT_SECONDS) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise WorkloadError(
                    f"{shown} is {int(length)} bytes, over the {max_bytes} byte limit"
                )
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise WorkloadError(f"{shown} is over the {max_bytes} byte limit")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response (and its socket)
        raise WorkloadError(f"HTTP {exc.code} {exc.reason} from {shown}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise WorkloadError(
                f"timed out after {URL_TIMEOUT_SECONDS:g} s fetching {shown}"
            ) from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise WorkloadError(f"cannot reach {shown}: {text}") from None
    except TimeoutError:
        raise WorkloadError(f"timed out after {URL_TIMEOUT_SECONDS:g} s fetching {shown}") from None
    except OSError as exc:
        raise WorkloadError(f"cannot read {shown}: {exc.strerror or exc}") from None
    return b"".join(chunks)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - signature fixed by the base class
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise WorkloadError(f"refusing redirect to non-http(s) URL scheme {scheme!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def resolve_artifact_path(artifacts: Path, relative: str) -> Path:
    rel = Path(relative)
    if rel.is_absolute():
        raise WorkloadError(f"data.file.path must be relative to the artifact volume: {relative}")
    root = artifacts.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise WorkloadError(f"data.file.path escapes the artifact volume: {relative}")
    return path


def read_file_bytes(path: Path, shown: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise WorkloadError(f"data file not found: {shown}") from None
    except IsADirectoryError:
        raise WorkloadError(f"data file is a directory: {shown}") from None
    except OSError as exc:
        raise WorkloadError(f"cannot read data file {shown}: {exc.strerror}") from None


@dataclass(frozen=True)
class CsvSource:
    """Where a CSV is read from (twice at most: a text column is re-read on its own)."""

    open: Callable[[], IO[str]]  # a text stream: UTF-8, a BOM dropped, newlines untranslated
    max_records: int  # an upper bound on the records: its line breaks + 1


def bytes_source(data: bytes) -> CsvSource:
    def opener() -> IO[str]:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")

    return CsvSource(opener, data.count(b"\n") + data.count(b"\r") + 1)


def file_source(path: Path, shown: str) -> CsvSource:
    """A CSV file read as a stream (never whole into memory); errors as read_file_bytes."""
    breaks = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                breaks += chunk.count(b"\n") + chunk.count(b"\r")
    except FileNotFoundError:
        raise WorkloadError(f"data file not found: {shown}") from None
    except IsADirectoryError:
        raise WorkloadError(f"data file is a directory: {shown}") from None
    except OSError as exc:
        raise WorkloadError(f"cannot read data file {shown}: {exc.strerror}") from None

    def opener() -> IO[str]:
        return path.open("r", encoding="utf-8-sig", newline="")

    return CsvSource(opener, breaks + 1)


def _blank(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def parse_csv(data: bytes, shown: str) -> Table:
    return parse_csv_source(bytes_source(data), shown)


def parse_csv_source(source: CsvSource, shown: str) -> Table:
    """Parse a CSV into one float64 block (numeric columns) plus re-readable text columns.

    Rows are converted CSV_CHUNK_ROWS at a time into a block preallocated from the line
    count (pages past the last row are never touched), so memory stays near 8 bytes per
    cell instead of a Python string per cell.
    """
    header: list[str] | None = None
    text: dict[int, str] = {}  # column -> its first value that is not a number
    block = np.empty((0, 0), dtype=np.float64)
    rows = 0
    chunk: list[list[str]] = []
    line = 0
    try:
        with source.open() as stream:
            reader = csv.reader(stream)
            for record in reader:
                line = reader.line_num
                if _blank(record):
                    continue
                if header is None:
                    header = [h.strip() for h in record]
                    block = np.empty((max(source.max_records, 1), len(header)), dtype=np.float64)
                    continue
                if len(record) != len(header):
                    raise WorkloadError(
                        f"{shown} line {reader.line_num} has {len(record)} fields, "
                        f"the header has {len(header)}"
                    )
                chunk.append(record)
                if len(chunk) == CSV_CHUNK_ROWS:
                    block = _store_chunk(block, rows, chunk, text)
                    rows += len(chunk)
                    chunk = []
    except csv.Error as exc:
        raise WorkloadError(f"{shown} is not valid CSV (line {line + 1}): {exc}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{shown} is not UTF-8 text (near line {line + 1})") from None
    if header is None:
        raise WorkloadError(f"{shown} is empty")
    if chunk:
        block = _store_chunk(block, rows, chunk, text)
        rows += len(chunk)
    if not rows:
        raise WorkloadError(f"{shown} has a header but no data rows")
    values: list[Any] = []
    for j in range(len(header)):
        if j in text:
            values.append(TextColumn(text[j], functools.partial(_read_column, source, j)))
        else:
            values.append(block[:rows, j])
    return Table(header, values, n_rows=rows, block=block[:rows])


def _store_chunk(
    block: FloatArray, start: int, chunk: list[list[str]], text: dict[int, str]
) -> FloatArray:
    end = start + len(chunk)
    if end > len(block):  # more records than line breaks cannot happen; never overflow
        grown = np.empty((max(end, 2 * len(block)), block.shape[1]), dtype=np.float64)
        grown[:start] = block[:start]
        block = grown
    target = block[start:end]
    if not text:
        try:
            target[:] = np.asarray(chunk, dtype=np.float64)
            return block
        except (ValueError, TypeError, OverflowError):
            pass  # a missing token or text somewhere: column by column
    for j in range(block.shape[1]):
        if j in text:
            target[:, j] = math.nan
            continue
        arr, bad = _parse_numeric([record[j] for record in chunk])
        if arr is None:
            text[j] = bad
            target[:, j] = math.nan
        else:
            target[:, j] = arr
    return block


def _read_column(source: CsvSource, j: int) -> list[str]:
    """The raw values of column j (a second pass, only for a text column that is used)."""
    out: list[str] = []
    with source.open() as stream:
        seen_header = False
        for record in csv.reader(stream):
            if _blank(record):
                continue
            if seen_header:
                out.append(record[j])
            seen_header = True
    return out


def parse_parquet(data: bytes, shown: str) -> Table:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise WorkloadError(
            f"cannot read {shown}: parquet needs pyarrow, which is not installed in this "
            "image; use format: csv"
        ) from None
    if not data:
        raise WorkloadError(f"{shown} is empty")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises its own hierarchy
        raise WorkloadError(f"{shown} is not a readable parquet file: {exc}") from exc
    if table.num_rows == 0:
        raise WorkloadError(f"{shown} has no rows")
    names = [str(n) for n in table.column_names]
    values: list[Any] = [table.column(i).to_pylist() for i in range(len(names))]
    return Table(names, values)


def load_table(spec: DataSpec, artifacts: Path) -> Table:
    if spec.kind == "builtin":
        return load_builtin(spec.location)
    if spec.kind == "url":
        shown = redact_url(spec.location)
        raw = fetch_url(spec.location)
        return parse_parquet(raw, shown) if spec.fmt == "parquet" else parse_csv(raw, shown)
    shown = spec.location
    path = resolve_artifact_path(artifacts, spec.location)
    if spec.fmt == "parquet":
        return parse_parquet(read_file_bytes(path, shown), shown)
    return parse_csv_source(file_source(path, shown), shown)


# ----------------------------------------------------------------------------- typing


def _parse_numeric(values: Sequence[Any]) -> tuple[FloatArray | None, Any]:
    """Parse a column to float64 (missing -> NaN); (None, offending value) when non-numeric."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False), None
    try:
        return np.asarray(values, dtype=np.float64), None
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = math.nan
        elif isinstance(v, str):
            s = v.strip()
            if s.lower() in MISSING_TOKENS:
                out[i] = math.nan
                continue
            try:
                out[i] = float(s)
            except ValueError:
                return None, v
        elif isinstance(v, int | float | np.number | decimal.Decimal):
            try:
                out[i] = float(v)
            except OverflowError:
                out[i] = math.inf  # reported with the non-finite values
        else:
            return None, v
    return out, None


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip().lower() in MISSING_TOKENS
    return isinstance(v, float) and math.isnan(v)


@dataclass
class Dataset:
    x: FloatArray
    y: npt.NDArray[Any]
    feature_names: list[str]
    target: str
    task: str
    class_names: list[str] | None


def build_dataset(table: Table, spec: DataSpec, shown: str) -> Dataset:
    if table.rows == 0:
        raise WorkloadError(f"{shown} has no rows")
    if len(set(table.columns)) != len(table.columns):
        dups = sorted({c for c in table.columns if table.columns.count(c) > 1})
        raise WorkloadError(f"{shown} has duplicate column names: {', '.join(dups)}")
    if any(not c for c in table.columns):
        raise WorkloadError(f"{shown} has an empty column name")
    if spec.target not in table.columns:
        raise WorkloadError(
            f"target column {spec.target!r} not found in {shown}; available columns: "
            + ", ".join(table.columns)
        )
    feature_names = [c for c in table.columns if c != spec.target]
    if not feature_names:
        raise WorkloadError(f"{shown} has no feature columns besides the target {spec.target!r}")

    # features: numeric, finite
    feats: list[FloatArray] = []
    non_numeric: list[str] = []
    for name in feature_names:
        column = table.values[table.columns.index(name)]
        arr, bad = (
            (None, column.first_bad) if isinstance(column, TextColumn) else _parse_numeric(column)
        )
        if arr is None:
            non_numeric.append(f"{name} (e.g. {_show_value(bad)})")
        else:
            feats.append(arr)
    if non_numeric:
        raise WorkloadError(
            "non-numeric feature columns (encode them as numbers first): " + ", ".join(non_numeric)
        )
    t = table.columns.index(spec.target)
    if table.block is not None and t in (0, len(table.columns) - 1):
        x = table.block[:, 1:] if t == 0 else table.block[:, :-1]  # a view: the split copies
    else:
        x = np.column_stack(feats) if feats else np.empty((table.rows, 0))
    bad_counts = (~np.isfinite(x)).sum(axis=0)
    if bad_counts.any():
        listed = ", ".join(
            f"{feature_names[i]} ({int(n)})" for i, n in enumerate(bad_counts) if n > 0
        )
        raise WorkloadError(f"missing or non-finite values in feature columns: {listed}")

    # target
    raw_y = table.values[table.columns.index(spec.target)]
    if isinstance(raw_y, TextColumn):
        raw_y = raw_y.read()
    missing_y = (
        int(np.isnan(raw_y).sum())
        if isinstance(raw_y, np.ndarray) and raw_y.dtype.kind == "f"
        else sum(1 for v in raw_y if _is_missing(v))
    )
    if missing_y:
        raise WorkloadError(f"target column {spec.target!r} has {missing_y} missing values")
    y_num, _ = _parse_numeric(raw_y)
    known = table.known_task if spec.target == "target" else None
    y, task = _decide_task(y_num, raw_y, spec, known)
    class_names = table.class_names if known is not None and task == "classification" else None

    if task == "classification":
        counts = Counter(y.tolist())
        if len(counts) < 2:
            only = next(iter(counts))
            raise WorkloadError(
                f"classification needs at least 2 classes; target {spec.target!r} has only {only!r}"
            )
        lonely = sorted(str(c) for c, n in counts.items() if n < 2)
        if lonely:
            raise WorkloadError(
                "each class needs at least 2 rows for a stratified split; classes with one "
                "row: " + ", ".join(lonely)
            )
    return Dataset(x, y, feature_names, spec.target, task, class_names)


def _show_value(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _decide_task(
    y_num: FloatArray | None, raw_y: Sequence[Any], spec: DataSpec, known: str | None
) -> tuple[npt.NDArray[Any], str]:
    target = spec.target
    if y_num is not None and not np.isfinite(y_num).all():
        raise WorkloadError(f"target column {target!r} has non-finite values")
    integral = y_num is not None and bool(np.all(y_num == np.round(y_num)))
    if y_num is not None:
        n_distinct = len(np.unique(y_num))
    else:
        labels = np.asarray([str(v).strip() for v in raw_y])
        n_distinct = len(np.unique(labels))

    task = spec.task
    if task == "auto":
        if known is not None:
            task = known
        elif y_num is None:
            if n_distinct > AUTO_MAX_CLASSES:
                raise WorkloadError(
                    f"target column {target!r} is text with {n_distinct} distinct values; "
                    "set data.task: classification to use it as labels"
                )
            task = "classification"
        else:
            task = "classification" if integral and n_distinct <= AUTO_MAX_CLASSES else "regression"

    if task == "regression":
        if y_num is None:
            raise WorkloadError(f"regression needs a numeric target; {target!r} is text")
        return y_num, task
    if y_num is None:
        return labels, task
    if not integral:
        raise WorkloadError(
            f"classification needs discrete labels; target {target!r} has non-integer "
            "numbers (use task: regression)"
        )
    return y_num.astype(np.int64), task


# ----------------------------------------------------------------------------- feedback


@dataclass
class Feedback:
    x: FloatArray
    y: npt.NDArray[Any]
    rows: int
    skipped: int
    files: int


def read_feedback(directory: Path, n_features: int, task: str, y_kind: str) -> Feedback:
    """Read labelled feedback rows; skip (and count) malformed or mismatched records."""
    xs: list[list[float]] = []
    ys: list[Any] = []
    skipped = 0
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    for path in files:
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.strip():
                continue
            try:
                row = _feedback_row(line, n_features, task, y_kind)
            except (OverflowError, ValueError, TypeError):  # e.g. an int too large for float
                row = None
            if row is None:
                skipped += 1
                continue
            xs.append(row[0])
            ys.append(row[1])
    if not xs:
        return Feedback(np.empty((0, n_features)), np.empty(0), 0, skipped, len(files))
    x = np.asarray(xs, dtype=np.float64)
    y: npt.NDArray[Any]
    if task == "regression":
        y = np.asarray(ys, dtype=np.float64)
    elif y_kind == "U":
        y = np.asarray(ys, dtype=str)
    else:
        y = np.asarray(ys, dtype=np.int64)
    return Feedback(x, y, len(xs), skipped, len(files))


def _feedback_row(
    line: bytes, n_features: int, task: str, y_kind: str
) -> tuple[list[float], Any] | None:
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict):
        return None
    feats = rec.get("features")
    label = rec.get("label")
    if not isinstance(feats, list) or len(feats) != n_features:
        return None
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in feats
    ):
        return None
    if label is None or isinstance(label, bool):
        return None
    if task == "regression":
        if not isinstance(label, int | float) or not math.isfinite(label):
            return None
        return [float(v) for v in feats], float(label)
    if y_kind == "U":
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if not isinstance(label, str | int):
            return None
        return [float(v) for v in feats], str(label)
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if not isinstance(label, int) or not -(2**63) <= label < 2**63:
        return None  # not an int64 class label: skipped and counted like any bad line
    return [float(v) for v in feats], label


# ----------------------------------------------------------------------------- split


def split(
    ds: Dataset, test_fraction: float, seed: int
) -> tuple[FloatArray, npt.NDArray[Any], FloatArray, npt.NDArray[Any]]:
    """Seeded shuffle split; stratified for classification. Returns X/y train, X/y test."""
    n = len(ds.y)
    n_test = math.ceil(test_fraction * n)
    if n < 2 or n_test >= n:
        raise WorkloadError(f"too few rows ({n}) to hold out a test split of {test_fraction:g}")
    rng = np.random.default_rng(seed)
    if ds.task == "classification":
        train_idx, test_idx = stratified_indices(ds.y, n_test, rng)
    else:
        order = rng.permutation(n)
        test_idx, train_idx = order[:n_test], order[n_test:]
    return (
        np.ascontiguousarray(ds.x[train_idx], dtype=np.float64),
        ds.y[train_idx],
        np.ascontiguousarray(ds.x[test_idx], dtype=np.float64),
        ds.y[test_idx],
    )


def stratified_indices(
    y: npt.NDArray[Any], n_test: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Train and test row indices with each class held out in proportion to its size.

    Every class gets at least one test and one training row when both splits have room
    for every class; the rest of the test rows go by the largest remainder of the
    proportional share (ties broken by the seeded generator). Rows within a class, and
    then each split's order, are shuffled by the same generator.
    """
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n, k = len(y), len(counts)
    share = counts * (n_test / n)
    room = n_test >= k and n - n_test >= k
    lo = np.ones(k, dtype=np.int64) if room else np.zeros(k, dtype=np.int64)
    hi = counts - 1 if room else counts.astype(np.int64)
    take = np.clip(np.floor(share).astype(np.int64), lo, hi)
    tie = rng.random(k)
    left = n_test - int(take.sum())
    while left:
        step = 1 if left > 0 else -1
        movable = np.flatnonzero(take < hi) if step > 0 else np.flatnonzero(take > lo)
        gap = (share - take)[movable] * step  # most under-served first (adding), else over-served
        order = movable[np.lexsort((tie[movable], -gap))][: abs(left)]
        take[order] += step
        left -= step * len(order)
    by_class = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    test_parts, train_parts = [], []
    for c in range(k):
        rows = rng.permutation(by_class[starts[c] : starts[c] + counts[c]])
        test_parts.append(rows[: take[c]])
        train_parts.append(rows[take[c] :])
    test_idx = rng.permutation(np.concatenate(test_parts))
    train_idx = rng.permutation(np.concatenate(train_parts))
    return train_idx, test_idx


# ----------------------------------------------------------------------------- profile


def _stats(col: FloatArray) -> JSONDict:
    qs = np.quantile(col, QUANTILES)
    return {
        "min": float(col.min()),
        "max": float(col.max()),
        "mean": float(col.mean()),
        "std": float(col.std()),
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
    }


def build_profile(
    x_train: FloatArray,
    y_train: npt.NDArray[Any],
    y_test: npt.NDArray[Any],
    ds: Dataset,
    seed: int,
) -> JSONDict:
    n = len(x_train)
    rng = np.random.default_rng(seed)
    k = min(REFERENCE_SAMPLE_ROWS, n)
    idx = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
    features: list[JSONDict] = []
    for j, name in enumerate(ds.feature_names):
        col = x_train[:, j]
        distinct, counts = np.unique(col, return_counts=True)
        entry: JSONDict = {"name": name, **_stats(col), "distinct": len(distinct)}
        if len(distinct) <= CATEGORICAL_MAX_DISTINCT:
            entry["kind"] = "categorical"
            entry["categories"] = [float(v) for v in distinct]
            entry["categoryCounts"] = [int(c) for c in counts]
        else:
            entry["kind"] = "numeric"
        entry["sample"] = col[idx].tolist()
        features.append(entry)
    profile: JSONDict = {
        "rows": int(len(y_train) + len(y_test)),
        "trainRows": len(y_train),
        "testRows": len(y_test),
        "columns": len(ds.feature_names) + 1,
        "featureCount": len(ds.feature_names),
        "featureNames": ds.feature_names,
        "target": ds.target,
        "task": ds.task,
        "reference": {"split": "train", "sampleRows": int(k), "seed": seed},
        "featureStats": features,
    }
    if ds.task == "classification":
        both = np.concatenate([y_train, y_test])
        profile["classBalance"] = _balance(both)
        profile["trainClassBalance"] = _balance(y_train)
    else:
        profile["targetStats"] = _stats(np.asarray(y_train, dtype=np.float64))
    return profile


def _balance(y: npt.NDArray[Any]) -> dict[str, int]:
    labels, counts = np.unique(y, return_counts=True)
    return {str(lbl): int(c) for lbl, c in zip(labels.tolist(), counts.tolist(), strict=True)}


# ----------------------------------------------------------------------------- main


def _save_npz(path: Path, x: FloatArray, y: npt.NDArray[Any]) -> None:
    """np.savez straight to a temporary file, then rename (no in-memory copy of the file)."""
    atomic_write_with(path, lambda fh: np.savez(fh, X=x, y=y))


def run(artifacts: Path, cycle: int, data: Any) -> JSONDict:
    """Run collect for `cycle`; returns the termination message."""
    spec = parse_data_spec(data)
    shown = (
        f"builtin dataset {spec.location}"
        if spec.kind == "builtin"
        else (redact_url(spec.location) if spec.kind == "url" else spec.location)
    )
    table = load_table(spec, artifacts)
    ds = build_dataset(table, spec, shown)
    del table  # the parsed columns: X is built
    x_tr, y_tr, x_te, y_te = split(ds, spec.test_fraction, spec.seed)
    ds.x = np.empty((0, ds.x.shape[1]))  # the splits hold the rows now

    fb = Feedback(np.empty((0, x_tr.shape[1])), np.empty(0), 0, 0, 0)
    if spec.include_feedback:
        fb = read_feedback(feedback_dir(artifacts), x_tr.shape[1], ds.task, ds.y.dtype.kind)
        if fb.rows:
            x_tr = np.concatenate([x_tr, fb.x])
            if ds.y.dtype.kind == "U":
                y_tr = np.concatenate([y_tr.astype(str), fb.y.astype(str)])
            else:
                y_tr = np.concatenate([y_tr, fb.y.astype(y_tr.dtype)])

    digest = data_hash(x_tr, y_tr, x_te, y_te, ds.feature_names)
    labels: list[Any] | None = None
    if ds.task == "classification":
        labels = np.unique(np.concatenate([y_tr, y_te])).tolist()

    out = data_dir(artifacts, cycle)
    _save_npz(out / "train.npz", x_tr, y_tr)
    _save_npz(out / "test.npz", x_te, y_te)
    profile = build_profile(x_tr, y_tr, y_te, ds, spec.seed)
    write_json(out / "profile.json", profile, indent=None)  # compact: it holds the samples
    rows = len(y_tr) + len(y_te)
    snapshot: JSONDict = {
        "cycle": cycle,
        "dataHash": digest,
        "source": describe_source(spec),
        "task": ds.task,
        "target": ds.target,
        "featureNames": ds.feature_names,
        "features": len(ds.feature_names),
        "labelClasses": labels,
        "classNames": ds.class_names,
        "rows": rows,
        "trainRows": len(y_tr),
        "testRows": len(y_te),
        "testFraction": spec.test_fraction,
        "seed": spec.seed,
        "stratified": ds.task == "classification",
        "includeFeedback": spec.include_feedback,
        "feedbackRows": fb.rows,
        "feedbackSkipped": fb.skipped,
        "feedbackFiles": fb.files,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / "snapshot.json", snapshot)  # last: marks the snapshot complete
    return {"dataHash": digest, "rows": rows, "features": len(ds.feature_names), "task": ds.task}
