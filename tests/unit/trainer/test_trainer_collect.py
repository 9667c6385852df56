"""collect: bundled datasets, CSV files and URLs, feedback folding, and every clear error."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelcycle_trainer import collect
from modelcycle_trainer.common import WorkloadError, data_hash, load_split

IRIS = {"builtin": {"name": "iris"}}


def _read(artifacts: Path, name: str, cycle: int = 1) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        (artifacts / "cycles" / str(cycle) / "data" / name).read_text()
    )
    return result


def _csv(artifacts: Path, text: str, name: str = "data.csv") -> dict[str, Any]:
    (artifacts / "datasets").mkdir(parents=True, exist_ok=True)
    (artifacts / "datasets" / name).write_text(text)
    return {"file": {"path": f"datasets/{name}", "format": "csv"}}


def _error(artifacts: Path, data: dict[str, Any]) -> str:
    with pytest.raises(WorkloadError) as info:
        collect.run(artifacts, 1, data)
    return info.value.message


def test_iris_snapshot_message_files_and_hash(tmp_path: Path) -> None:
    msg = collect.run(tmp_path, 1, IRIS)
    assert msg["rows"] == 150
    assert msg["features"] == 4
    assert msg["task"] == "classification"
    assert msg["dataHash"].startswith("sha256:")
    assert len(msg["dataHash"]) == len("sha256:") + 64

    ddir = tmp_path / "cycles" / "1" / "data"
    assert sorted(p.name for p in ddir.iterdir()) == [
        "profile.json",
        "snapshot.json",
        "test.npz",
        "train.npz",
    ]
    x_tr, y_tr = load_split(ddir / "train.npz", "train")
    x_te, y_te = load_split(ddir / "test.npz", "test")
    assert len(y_tr) + len(y_te) == 150
    assert len(y_te) == 38  # ceil(0.25 * 150)
    assert sorted(np.unique(y_te).tolist()) == [0, 1, 2]  # stratified: every class held out
    assert sorted(np.bincount(y_te).tolist()) == [12, 13, 13]

    snap = _read(tmp_path, "snapshot.json")
    assert snap["dataHash"] == msg["dataHash"]
    assert snap["source"] == {"kind": "builtin", "name": "iris"}
    assert snap["task"] == "classification"
    assert snap["target"] == "target"
    assert snap["labelClasses"] == [0, 1, 2]
    assert snap["classNames"] == ["setosa", "versicolor", "virginica"]
    assert snap["feedbackRows"] == 0
    assert snap["featureNames"][0] == "sepal length (cm)"
    assert data_hash(x_tr, y_tr, x_te, y_te, snap["featureNames"]) == msg["dataHash"]


def test_iris_profile_holds_statistics_and_reference_sample(tmp_path: Path) -> None:
    collect.run(tmp_path, 1, IRIS)
    prof = _read(tmp_path, "profile.json")
    assert prof["rows"] == 150
    assert prof["columns"] == 5
    assert prof["featureCount"] == 4
    assert prof["classBalance"] == {"0": 50, "1": 50, "2": 50}
    assert sum(prof["trainClassBalance"].values()) == prof["trainRows"] == 112
    stats = prof["featureStats"]
    assert [s["name"] for s in stats] == prof["featureNames"]
    petal = stats[2]
    x_tr, _ = load_split(tmp_path / "cycles/1/data/train.npz", "train")  # the reference
    assert petal["min"] == x_tr[:, 2].min()
    assert petal["max"] == x_tr[:, 2].max()
    assert petal["mean"] == pytest.approx(x_tr[:, 2].mean())
    assert petal["min"] <= petal["quantiles"]["0.5"] <= petal["max"]
    assert petal["std"] > 0
    assert petal["kind"] == "numeric"
    assert len(petal["sample"]) == 112  # all training rows (fewer than 1000)
    assert prof["reference"] == {"split": "train", "sampleRows": 112, "seed": 42}


def test_same_spec_same_hash_other_seed_other_hash(tmp_path: Path) -> None:
    a = collect.run(tmp_path / "a", 1, IRIS)
    b = collect.run(tmp_path / "b", 1, IRIS)
    c = collect.run(tmp_path / "c", 1, {**IRIS, "seed": 7})
    assert a["dataHash"] == b["dataHash"]
    assert a["dataHash"] != c["dataHash"]


def test_digits_reference_sample_is_capped_and_categorical_marked(tmp_path: Path) -> None:
    msg = collect.run(tmp_path, 1, {"builtin": {"name": "digits"}, "testFraction": 0.3})
    assert msg == {**msg, "rows": 1797, "features": 64, "task": "classification"}
    prof = _read(tmp_path, "profile.json")
    assert prof["reference"]["sampleRows"] == 1000
    assert all(len(s["sample"]) == 1000 for s in prof["featureStats"])
    kinds = {s["kind"] for s in prof["featureStats"]}
    assert kinds == {"numeric", "categorical"}  # e.g. the always-zero corner pixels
    corner = prof["featureStats"][0]
    assert corner["kind"] == "categorical"
    assert sum(corner["categoryCounts"]) == prof["trainRows"]


def test_diabetes_is_regression(tmp_path: Path) -> None:
    msg = collect.run(tmp_path, 1, {"builtin": {"name": "diabetes"}})
    assert msg["task"] == "regression"
    assert msg["rows"] == 442
    assert msg["features"] == 10
    snap = _read(tmp_path, "snapshot.json")
    assert snap["labelClasses"] is None
    assert snap["stratified"] is False
    prof = _read(tmp_path, "profile.json")
    assert "classBalance" not in prof
    assert prof["targetStats"]["min"] >= 25.0


def test_explicit_task_overrides_the_builtin_kind(tmp_path: Path) -> None:
    msg = collect.run(tmp_path, 1, {**IRIS, "task": "regression"})
    assert msg["task"] == "regression"


CSV = "a,b,species\n" + "".join(
    f"{i * 0.1:.1f},{(i % 7) * 1.5},{'cat' if i % 3 else 'dog'}\n" for i in range(60)
)


def test_csv_file_with_text_labels(tmp_path: Path) -> None:
    msg = collect.run(tmp_path, 1, {**_csv(tmp_path, CSV), "target": "species"})
    assert msg["rows"] == 60
    assert msg["features"] == 2
    assert msg["task"] == "classification"
    snap = _read(tmp_path, "snapshot.json")
    assert snap["featureNames"] == ["a", "b"]
    assert snap["labelClasses"] == ["cat", "dog"]
    assert snap["source"] == {"kind": "file", "path": "datasets/data.csv", "format": "csv"}
    _, y = load_split(tmp_path / "cycles/1/data/train.npz", "train")
    assert y.dtype.kind == "U"


def test_csv_numeric_targets_decide_the_task(tmp_path: Path) -> None:
    ints = "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(30))
    floats = "x,y\n" + "".join(f"{i},{i * 0.37:.3f}\n" for i in range(30))
    many = "x,y\n" + "".join(f"{i},{i}\n" for i in range(30))  # 30 distinct integers
    assert collect.run(tmp_path, 1, {**_csv(tmp_path, ints), "target": "y"})["task"] == (
        "classification"
    )
    assert collect.run(tmp_path, 2, {**_csv(tmp_path, floats), "target": "y"})["task"] == (
        "regression"
    )
    assert collect.run(tmp_path, 3, {**_csv(tmp_path, many), "target": "y"})["task"] == (
        "regression"
    )


def test_csv_missing_target_lists_columns(tmp_path: Path) -> None:
    msg = _error(tmp_path, {**_csv(tmp_path, CSV), "target": "label"})
    assert "target column 'label' not found" in msg
    assert "available columns: a, b, species" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("a,b,target\n", "has a header but no data rows"),
    ],
)
def test_csv_empty_file(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _error(tmp_path, _csv(tmp_path, text))


def test_csv_non_numeric_feature_columns_are_named(tmp_path: Path) -> None:
    text = "colour,size,shape,target\n" + "".join(
        f"red,{i},{'round' if i % 2 else 'square'},{i % 2}\n" for i in range(20)
    )
    msg = _error(tmp_path, _csv(tmp_path, text))
    assert "non-numeric feature columns" in msg
    assert "colour (e.g. 'red')" in msg
    assert "shape (e.g. 'square')" in msg
    assert "size" not in msg


def test_csv_missing_feature_values_are_named_with_counts(tmp_path: Path) -> None:
    rows = [f"{'' if i < 3 else i},{'NaN' if i == 5 else i},{i},{i % 2}" for i in range(20)]
    msg = _error(tmp_path, _csv(tmp_path, "a,b,c,target\n" + "\n".join(rows) + "\n"))
    assert "missing or non-finite values in feature columns: a (3), b (1)" in msg


def test_csv_missing_target_values(tmp_path: Path) -> None:
    text = "a,target\n" + "".join(f"{i},{'' if i == 4 else i % 2}\n" for i in range(20))
    assert "target column 'target' has 1 missing values" in _error(tmp_path, _csv(tmp_path, text))


def test_one_class_is_an_error(tmp_path: Path) -> None:
    text = "a,target\n" + "".join(f"{i},yes\n" for i in range(20))
    msg = _error(tmp_path, {**_csv(tmp_path, text), "task": "classification"})
    assert "at least 2 classes" in msg
    assert "'yes'" in msg


def test_a_class_with_one_row_cannot_be_stratified(tmp_path: Path) -> None:
    text = "a,target\n" + "".join(f"{i},{'rare' if i == 0 else 'common'}\n" for i in range(20))
    assert "classes with one row: rare" in _error(tmp_path, _csv(tmp_path, text))


def test_ragged_csv_line_is_named(tmp_path: Path) -> None:
    text = "a,b,target\n1,2,0\n3,4\n5,6,1\n"
    assert "line 3 has 2 fields, the header has 3" in _error(tmp_path, _csv(tmp_path, text))


def test_missing_file_and_escaping_path(tmp_path: Path) -> None:
    assert "data file not found: nope.csv" in _error(tmp_path, {"file": {"path": "nope.csv"}})
    escape = _error(tmp_path, {"file": {"path": "../etc/passwd"}})
    assert "escapes the artifact volume" in escape
    absolute = _error(tmp_path, {"file": {"path": "/etc/passwd"}})
    assert "must be relative" in absolute


def test_parquet_file_is_read_like_the_same_csv(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(5.1, 3.5, "a"), (4.9, 3.0, "a"), (6.2, 2.9, "b"), (5.9, 3.0, "b")] * 10
    table = pa.table(
        {
            "f1": [r[0] for r in rows],
            "f2": [r[1] for r in rows],
            "label": [r[2] for r in rows],
        }
    )
    csv = "f1,f2,label\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
    (tmp_path / "p").mkdir()
    (tmp_path / "c").mkdir()
    pq.write_table(table, tmp_path / "p" / "d.parquet")
    (tmp_path / "c" / "d.csv").write_text(csv)
    a = collect.run(
        tmp_path / "p", 1, {"file": {"path": "d.parquet", "format": "parquet"}, "target": "label"}
    )
    b = collect.run(tmp_path / "c", 1, {"file": {"path": "d.csv"}, "target": "label"})
    assert a["rows"] == b["rows"] == 40
    assert a["features"] == 2
    assert a["dataHash"] == b["dataHash"], "the same table hashes the same in either format"


def test_corrupt_parquet_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_bytes(b"PAR1 but not really")
    msg = _error(tmp_path, {"file": {"path": "d.parquet", "format": "parquet"}})
    assert "is not a readable parquet file" in msg


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "exactly one of builtin, url, file (found: none)"),
        (
            {"builtin": {"name": "iris"}, "url": {"url": "http://x/y.csv"}},
            "exactly one of builtin, url, file (found: builtin, url)",
        ),
        ({"builtin": {"name": "linnerud"}}, "unknown builtin dataset 'linnerud'"),
        ({"url": {"url": "ftp://host/x.csv"}}, "must be http(s), got scheme 'ftp'"),
        ({**IRIS, "testFraction": 0.95}, "testFraction must be a number in 0.05..0.9"),
        ({**IRIS, "seed": -1}, "seed must be an integer"),
        ({**IRIS, "task": "clustering"}, "data.task must be one of"),
        ({"file": {"path": "x.txt", "format": "xlsx"}}, "format must be csv or parquet"),
    ],
)
def test_bad_specs(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    assert expected in _error(tmp_path, data)


def test_url_success(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    (root / "d.csv").write_text(CSV)
    msg = collect.run(
        tmp_path, 1, {"url": {"url": f"{base}/d.csv?token=s3cret"}, "target": "species"}
    )
    assert msg["rows"] == 60
    source = _read(tmp_path, "snapshot.json")["source"]
    assert source == {"kind": "url", "url": f"{base}/d.csv?…", "format": "csv"}


def test_url_http_status_is_named(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    _, base = http_dir
    msg = _error(tmp_path, {"url": {"url": f"{base}/missing.csv"}})
    assert msg.startswith("HTTP 404")
    assert f"{base}/missing.csv" in msg


def test_unreachable_url(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/x.csv"
    msg = _error(tmp_path, {"url": {"url": url}})
    assert msg.startswith(f"cannot reach {url}")
    assert "refused" in msg.lower()


def test_url_size_cap(http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    (root / "big.csv").write_text("a,target\n" + "1,0\n" * 1000)
    with pytest.raises(WorkloadError, match="over the 100 byte limit"):
        collect.fetch_url(f"{base}/big.csv", max_bytes=100)


def test_redact_url_drops_credentials_and_query() -> None:
    assert (
        collect.redact_url("https://u:p@host:8443/a/b.csv?sig=1#f") == "https://host:8443/a/b.csv?…"
    )
    assert collect.redact_url("http://host/a.csv") == "http://host/a.csv"


def _feedback(artifacts: Path, lines: list[str]) -> None:
    fdir = artifacts / "feedback"
    fdir.mkdir(parents=True, exist_ok=True)
    (fdir / "1-abc.jsonl").write_text("\n".join(lines) + "\n")


def test_feedback_is_folded_into_the_training_split_only(tmp_path: Path) -> None:
    base = collect.run(tmp_path / "plain", 1, {**IRIS, "includeFeedback": False})
    art = tmp_path / "fb"
    _feedback(
        art,
        [
            json.dumps({"features": [5.0, 3.0, 1.5, 0.2], "label": 0, "id": "r1"}),
            json.dumps({"features": [6.0, 3.0, 5.0, 2.0], "label": 2.0}),
            json.dumps({"features": [6.1, 2.9, 4.5, 1.4], "label": 1, "prediction": 2}),
            json.dumps({"features": [1.0, 2.0], "label": 0}),  # wrong feature count
            json.dumps({"features": [1.0, 2.0, 3.0, 4.0], "label": "x"}),  # not an int label
            '{"features": [1, 2, 3, 4], "lab',  # torn last write
        ],
    )
    msg = collect.run(art, 1, IRIS)
    snap = _read(art, "snapshot.json")
    assert snap["feedbackRows"] == 3
    assert snap["feedbackSkipped"] == 3
    assert snap["feedbackFiles"] == 1
    assert msg["rows"] == 153
    assert msg["dataHash"] != base["dataHash"]
    x_te, y_te = load_split(art / "cycles/1/data/test.npz", "test")
    x_te0, y_te0 = load_split(tmp_path / "plain/cycles/1/data/test.npz", "test")
    assert np.array_equal(x_te, x_te0)
    assert np.array_equal(y_te, y_te0)
    x_tr, y_tr = load_split(art / "cycles/1/data/train.npz", "train")
    assert len(y_tr) == 112 + 3
    assert x_tr[-3:].tolist()[0] == [5.0, 3.0, 1.5, 0.2]
    assert y_tr[-3:].tolist() == [0, 2, 1]


def test_feedback_ignored_when_disabled(tmp_path: Path) -> None:
    _feedback(tmp_path, [json.dumps({"features": [5.0, 3.0, 1.5, 0.2], "label": 0})])
    msg = collect.run(tmp_path, 1, {**IRIS, "includeFeedback": False})
    assert msg["rows"] == 150
    assert _read(tmp_path, "snapshot.json")["feedbackRows"] == 0


# --- bundled datasets without scikit-learn, and the numpy split -----------------------------


@pytest.mark.parametrize("name", sorted(collect.BUILTIN_DATASETS))
def test_builtin_files_parse_exactly_as_sklearns_loaders(name: str) -> None:
    from sklearn import datasets

    x, y, names, class_names = collect.read_builtin(name)
    bunch = getattr(datasets, f"load_{name}")()
    assert np.array_equal(x, bunch.data), "same X, bit for bit"
    assert x.dtype == np.float64
    assert np.array_equal(y, bunch.target)
    assert y.dtype == np.asarray(bunch.target).dtype
    assert names == [str(n) for n in bunch.feature_names]
    if collect.BUILTIN_DATASETS[name] == "classification":
        assert class_names == [str(c) for c in bunch.target_names]
    else:
        assert class_names is None


def test_collect_never_imports_sklearn_or_scipy(tmp_path: Path) -> None:
    probe = (
        "import sys, json\n"
        "from modelcycle_trainer import collect\n"
        "from pathlib import Path\n"
        "for name in collect.BUILTIN_DATASETS:\n"
        "    collect.run(Path(sys.argv[1]) / name, 1, {'builtin': {'name': name}})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'scipy'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []


def _dataset(y: np.ndarray, task: str = "classification") -> collect.Dataset:
    x = np.arange(len(y) * 2, dtype=np.float64).reshape(len(y), 2)
    return collect.Dataset(x, y, ["a", "b"], "target", task, None)


@pytest.mark.parametrize(
    ("counts", "fraction"),
    [((50, 50, 50), 0.25), ((90, 10), 0.2), ((100, 3, 2), 0.1), ((7, 5, 3, 2, 2), 0.5)],
)
def test_stratified_split_keeps_every_class_in_both_and_the_fraction(
    counts: tuple[int, ...], fraction: float
) -> None:
    y = np.repeat(np.arange(len(counts)), counts)
    n = len(y)
    x_tr, y_tr, x_te, y_te = collect.split(_dataset(y), fraction, 3)
    assert len(y_te) == math.ceil(fraction * n)
    assert len(y_tr) + len(y_te) == n
    assert set(y_tr.tolist()) == set(y_te.tolist()) == set(range(len(counts)))
    shares = [count * len(y_te) / n for count in counts]
    if min(shares) >= 1:  # no class lifted to its one test row: proportional within a row
        for c, share in enumerate(shares):
            assert abs(int((y_te == c).sum()) - share) < 1
    rows = np.concatenate([x_tr[:, 0], x_te[:, 0]]) // 2
    assert sorted(rows.tolist()) == list(range(n)), "every row exactly once"
    assert np.array_equal(y[(x_te[:, 0] // 2).astype(int)], y_te), "X and y stay paired"


def test_split_is_deterministic_for_a_seed_and_shuffled() -> None:
    y = np.repeat([0, 1, 2], 40)
    a = collect.split(_dataset(y), 0.25, 11)
    b = collect.split(_dataset(y), 0.25, 11)
    c = collect.split(_dataset(y), 0.25, 12)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])
    assert len(set(a[3][:10].tolist())) > 1, "the test split is not grouped by class"


def test_split_when_the_test_split_cannot_hold_every_class() -> None:
    y = np.repeat(np.arange(10), 2)  # 20 rows, 10 classes, 0.1 -> 2 test rows
    _, y_tr, _, y_te = collect.split(_dataset(y), 0.1, 0)
    assert len(y_te) == 2
    assert set(y_tr.tolist()) == set(range(10)), "the training split still has every class"


def test_regression_split_is_a_seeded_shuffle() -> None:
    y = np.linspace(0.0, 1.0, 40)
    _, y_tr, _, y_te = collect.split(_dataset(y, "regression"), 0.25, 5)
    assert len(y_te) == 10
    assert sorted(np.concatenate([y_tr, y_te]).tolist()) == y.tolist()
    assert not np.array_equal(y_te, np.sort(y_te))


def test_csv_text_target_and_missing_tokens_over_many_chunks(tmp_path: Path) -> None:
    rows = collect.CSV_CHUNK_ROWS * 2 + 17  # the text column turns up in the second chunk
    lines = [f"{i},{i % 5},{'a' if i < collect.CSV_CHUNK_ROWS + 3 else 'b'}" for i in range(rows)]
    msg = collect.run(tmp_path, 1, {**_csv(tmp_path, "x,z,t\n" + "\n".join(lines)), "target": "t"})
    assert msg["rows"] == rows
    snap = _read(tmp_path, "snapshot.json")
    assert snap["labelClasses"] == ["a", "b"]
    x_tr, y_tr = load_split(tmp_path / "cycles/1/data/train.npz", "train")
    first = x_tr[:, 0].astype(int)
    expected = np.where(first < collect.CSV_CHUNK_ROWS + 3, "a", "b")
    assert np.array_equal(y_tr, expected), "labels read back in the second pass stay aligned"
    assert np.array_equal(x_tr[:, 1], first % 5)

    lines[collect.CSV_CHUNK_ROWS + 5] = "NA,1,a"
    lines[7] = "3,N/A,b"
    bad = _error(tmp_path, {**_csv(tmp_path, "x,z,t\n" + "\n".join(lines)), "target": "t"})
    assert "missing or non-finite values in feature columns: x (1), z (1)" in bad
