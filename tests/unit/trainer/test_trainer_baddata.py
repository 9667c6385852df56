"""Bad data through the workload's command line, as the Jobs run it.

Every way a user's data goes wrong (wrong columns, NaNs, strings in numeric columns, one
class only, an empty file, a huge file, ...) must end the ``collect`` step quickly with
exit code 1, one line on stderr naming the problem, and the same message as
``{"error": ...}`` in the termination log (what the operator shows in ``Stalled``) --
never a hang and never a traceback. The same for estimators outside the allowed modules.

Each case runs ``python -m modelcycle_trainer.cli`` in a subprocess with a time bound.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BOUND_SECONDS = 30.0
URL_MAX_BYTES = 200 * 1024 * 1024
GOOD_ROWS = "".join(f"{5 + i % 3}.{i % 10},{3 + i % 2}.{i % 7},{i % 3}\n" for i in range(30))
HEADER = "sepal,petal,species\n"
# VmHWM is this process's own peak (ru_maxrss would carry the forking pytest's over exec)
MEMORY_PROBE = (
    "import sys\n"
    "from modelcycle_trainer.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
    "print(f'maxrss-kib={hwm}', file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_cli(
    tmp_path: Path, *args: str, probe: bool = False
) -> tuple[int, str, dict[str, Any], float]:
    """(exit code, stderr, termination message, seconds) of one CLI run."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log = tmp_path / "termination-log"
    command = (
        [sys.executable, "-c", MEMORY_PROBE]
        if probe
        else [sys.executable, "-m", "modelcycle_trainer.cli"]
    )
    started = time.monotonic()
    done = subprocess.run(
        [
            *command,
            *args[:1],
            "--artifacts",
            str(artifacts),
            "--termination-log",
            str(log),
            *args[1:],
        ],
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS * 4,
    )
    took = time.monotonic() - started
    message = json.loads(log.read_text()) if log.exists() and log.read_text() else {}
    return done.returncode, done.stderr, message, took


def collect(
    tmp_path: Path, data: dict[str, Any], probe: bool = False
) -> tuple[int, str, dict[str, Any], float]:
    return run_cli(tmp_path, "collect", "--cycle", "1", "--data", json.dumps(data), probe=probe)


def assert_clear_failure(
    rc: int, err: str, message: dict[str, Any], took: float, *expected: str
) -> None:
    assert rc == 1, (rc, err)
    assert took < BOUND_SECONDS, f"took {took:.1f} s"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("modelcycle-trainer collect: error: "), err
    assert "Traceback" not in err
    assert "internal error" not in err, err
    error = message.get("error", "")
    assert len(json.dumps(message)) <= 4096
    for part in expected:
        assert part in lines[0], (part, lines[0])
        assert part in error, (part, error)


def write(tmp_path: Path, name: str, content: str | bytes) -> dict[str, Any]:
    path = tmp_path / "artifacts" / "datasets" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return {"file": {"path": f"datasets/{name}"}, "target": "species"}


BAD_FILES: list[tuple[str, str | bytes, dict[str, Any], list[str]]] = [
    (
        "wrong-target-column",
        "a,b,label\n1,2,0\n3,4,1\n",
        {},
        ["target column 'species' not found", "available columns: a, b, label"],
    ),
    ("no-feature-columns", "species\n0\n1\n", {}, ["no feature columns besides the target"]),
    ("duplicate-columns", "a,a,species\n1,2,0\n", {}, ["duplicate column names: a"]),
    ("empty-column-name", "a,,species\n1,2,0\n", {}, ["has an empty column name"]),
    ("empty-file", "", {}, ["datasets/empty-file.csv is empty"]),
    ("blank-lines-only", "\n\n  \n", {}, ["is empty"]),
    ("header-only", HEADER, {}, ["has a header but no data rows"]),
    ("ragged-row", HEADER + "1,2,0\n3,4\n", {}, ["line 3 has 2 fields, the header has 3"]),
    (
        "nans",
        HEADER + "NaN,1,0\n,2,1\n3,nan,0\n" + GOOD_ROWS,
        {},
        ["missing or non-finite values in feature columns: sepal (2), petal (1)"],
    ),
    (
        "infinities",
        HEADER + "inf,1,0\n-Infinity,2,1\n" + GOOD_ROWS,
        {},
        ["missing or non-finite values in feature columns: sepal (2)"],
    ),
    (
        "strings-in-numeric",
        HEADER + "5.1,tall,0\n" + GOOD_ROWS,
        {},
        ["non-numeric feature columns", "petal (e.g. 'tall')"],
    ),
    (
        "decimal-commas",
        HEADER.replace(",", ";") + "5,1;3,5;0\n",
        {},
        ["line 2 has 3 fields, the header has 1"],
    ),
    (
        "missing-target",
        HEADER + "5.1,3.5,\n" + GOOD_ROWS,
        {},
        ["target column 'species' has 1 missing"],
    ),
    (
        "one-class",
        HEADER + "".join(f"{i}.0,{i}.5,setosa\n" for i in range(20)),
        {"task": "classification"},
        ["classification needs at least 2 classes", "'setosa'"],
    ),
    (
        "lonely-class",
        HEADER + "1,2,rare\n" + "".join(f"{i},{i},common\n" for i in range(20)),
        {},
        ["classes with one row: rare"],
    ),
    (
        "too-few-rows",
        HEADER + "1,2,a\n3,4,a\n5,6,b\n7,8,b\n",
        {"testFraction": 0.9},
        ["too few rows"],
    ),
    (
        "text-target-many-values",
        HEADER + "".join(f"{i},{i},name{i}\n" for i in range(40)),
        {},
        ["is text with 40 distinct values", "data.task: classification"],
    ),
    (
        "regression-on-text",
        HEADER + GOOD_ROWS.replace(",0\n", ",x\n"),
        {"task": "regression"},
        ["regression needs a numeric target"],
    ),
    (
        "float-labels-for-classification",
        HEADER + "".join(f"{i},{i},{i}.5\n" for i in range(20)),
        {"task": "classification"},
        ["classification needs discrete labels"],
    ),
    ("not-utf8", (HEADER + "1,2,0\n").encode() + b"\xff\xfe,1,0\n", {}, ["is not UTF-8 text"]),
    ("binary-junk", bytes(range(256)) * 20, {}, ["datasets/binary-junk.csv"]),
    ("nul-bytes", HEADER + "1\x00,2,0\n", {}, ["non-numeric feature columns", "sepal"]),
]


@pytest.mark.parametrize(
    ("name", "content", "extra", "expected"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_file_fails_clearly_and_quickly(
    tmp_path: Path, name: str, content: str | bytes, extra: dict[str, Any], expected: list[str]
) -> None:
    data = {**write(tmp_path, f"{name}.csv", content), **extra}
    assert_clear_failure(*collect(tmp_path, data), *expected)


def test_files_outside_the_volume_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text(HEADER + GOOD_ROWS)
    datasets = tmp_path / "artifacts" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "link.csv").symlink_to(outside)
    (datasets / "dir.csv").mkdir()
    cases = [
        ({"file": {"path": "datasets/link.csv"}}, "escapes the artifact volume"),
        ({"file": {"path": "../secret.csv"}}, "escapes the artifact volume"),
        ({"file": {"path": str(outside)}}, "must be relative to the artifact volume"),
        ({"file": {"path": "datasets/none.csv"}}, "data file not found: datasets/none.csv"),
        ({"file": {"path": "datasets/dir.csv"}}, "data file is a directory"),
    ]
    for data, expected in cases:
        assert_clear_failure(*collect(tmp_path, {**data, "target": "species"}), expected)


def test_a_garbage_parquet_file_fails_clearly(tmp_path: Path) -> None:
    data = write(tmp_path, "x.parquet", b"PAR1" + bytes(range(200)) + b"PAR1")
    data["file"]["format"] = "parquet"
    assert_clear_failure(*collect(tmp_path, data), "datasets/x.parquet")


# --- huge inputs ---------------------------------------------------------------------------


class _HugeHandler(http.server.BaseHTTPRequestHandler):
    """/declared: claims 300 MB; /endless: streams without a length until the client stops."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        chunk = (HEADER + GOOD_ROWS * 100).encode()
        if self.path.startswith("/declared"):
            self.send_header("Content-Length", str(300 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(chunk)
            return
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        sent = 0
        try:
            while sent <= URL_MAX_BYTES + len(chunk):
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def huge_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HugeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_huge_download_is_refused_from_its_declared_length(tmp_path: Path, huge_url: str) -> None:
    data = {"url": {"url": f"{huge_url}/declared.csv"}, "target": "species"}
    rc, err, message, took = collect(tmp_path, data)
    assert_clear_failure(
        rc, err, message, took, "is 314572800 bytes, over the 209715200 byte limit"
    )
    assert took < 10


def test_a_huge_download_without_a_length_is_cut_at_the_limit(
    tmp_path: Path, huge_url: str
) -> None:
    data = {"url": {"url": f"{huge_url}/endless.csv?sig=s3cret"}, "target": "species"}
    rc, err, message, took = collect(tmp_path, data)
    assert_clear_failure(rc, err, message, took, "over the 209715200 byte limit")
    assert "s3cret" not in err
    assert "s3cret" not in json.dumps(message)


def test_a_big_local_file_is_collected_within_the_bound(tmp_path: Path) -> None:
    rows = 800_000
    body = "".join(f"{i % 97}.{i % 7},{i % 89}.{i % 5},{i % 3}\n" for i in range(rows))
    data = write(tmp_path, "big.csv", HEADER + body)
    size = (tmp_path / "artifacts" / "datasets" / "big.csv").stat().st_size
    rc, err, message, took = collect(tmp_path, data, probe=True)
    assert rc == 0, err
    assert message["rows"] == rows
    assert took < BOUND_SECONDS * 2, f"{size} bytes took {took:.1f} s"
    maxrss = int(err.rsplit("maxrss-kib=", 1)[1].split()[0]) * 1024
    small = write(tmp_path, "small.csv", HEADER + GOOD_ROWS)
    rc, small_err, _, _ = collect(tmp_path, small, probe=True)
    assert rc == 0, small_err
    base = int(small_err.rsplit("maxrss-kib=", 1)[1].split()[0]) * 1024
    print(
        f"collect: {size / 1e6:.1f} MB CSV in {took:.1f} s, peak RSS {maxrss / 1e6:.0f} MB "
        f"({base / 1e6:.0f} MB for a 30-row file)"
    )
    # Parsed into one float64 block, not a Python string per cell (that was ~19x the file).
    # Its cells are ~3 bytes of text and 8 as float64, and the block and the splits are
    # alive together: about 6x here, about 2.4x for a CSV of 9-character numbers.
    assert maxrss - base < 8 * size, f"{(maxrss - base) / size:.1f}x the file size"


# --- feedback folded into the next cycle ---------------------------------------------------


def test_a_feedback_line_with_a_huge_label_is_skipped_not_fatal(tmp_path: Path) -> None:
    feedback = tmp_path / "artifacts" / "feedback"
    feedback.mkdir(parents=True)
    good = {"features": [5.1, 3.5, 1.4, 0.2], "label": 0}
    huge = {"features": [5.1, 3.5, 1.4, 0.2], "label": int(1e300)}
    lines = [json.dumps(good), json.dumps(huge), json.dumps(good), "{torn"]
    (feedback / "1-abc.jsonl").write_text("\n".join(lines) + "\n")
    rc, err, _, _ = collect(tmp_path, {"builtin": {"name": "iris"}})
    assert rc == 0, err
    snapshot = json.loads((tmp_path / "artifacts/cycles/1/data/snapshot.json").read_text())
    assert (snapshot["feedbackRows"], snapshot["feedbackSkipped"]) == (2, 2)


def test_malformed_feedback_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    feedback = tmp_path / "artifacts" / "feedback"
    feedback.mkdir(parents=True)
    good = {"features": [5.1, 3.5, 1.4, 0.2], "label": 0}
    bad = [
        "{torn",
        json.dumps({"features": [1, 2, 3], "label": 0}),  # wrong feature count
        json.dumps({"features": [1, 2, 3, "x"], "label": 0}),
        json.dumps({"features": [1, 2, 3, 4], "label": None}),
        json.dumps({"features": [1, 2, 3, 4], "label": "setosa"}),  # text for int labels
        json.dumps({"features": [1e999, 2, 3, 4], "label": 1}),  # Infinity
        json.dumps([1, 2, 3, 4]),
        "\x00\x00",
    ]
    (feedback / "1-abc.jsonl").write_text("\n".join([json.dumps(good), *bad]) + "\n")
    rc, err, _, _ = collect(tmp_path, {"builtin": {"name": "iris"}})
    assert rc == 0, err
    snapshot = json.loads((tmp_path / "artifacts/cycles/1/data/snapshot.json").read_text())
    assert (snapshot["feedbackRows"], snapshot["feedbackSkipped"]) == (1, len(bad))


# --- estimators only from the allowed modules ----------------------------------------------

REFUSED_ESTIMATORS = [
    ("os.system", "package 'os' is not in the allowed modules (sklearn)"),
    ("subprocess.Popen", "package 'subprocess' is not in the allowed modules"),
    ("builtins.eval", "package 'builtins' is not in the allowed modules"),
    ("sklearnx.Evil", "package 'sklearnx' is not in the allowed modules"),
    ("importlib.import_module", "package 'importlib' is not in the allowed modules"),
    ("sklearn.utils.Bunch", "is not a scikit-learn estimator"),
    ("sklearn.base.BaseEstimator", "is not a scikit-learn estimator"),
    ("sklearn.datasets.load_iris", "is not a class"),
    ("sklearn.no_such_module.Thing", "cannot import module sklearn.no_such_module"),
    ("sklearn.linear_model.DoesNotExist", "has no attribute 'DoesNotExist'"),
    ("sklearn..LogisticRegression", "is not an import path"),
    ("sklearn.linear_model.LogisticRegression; import os", "is not an import path"),
]


@pytest.mark.parametrize(
    ("estimator", "expected"), REFUSED_ESTIMATORS, ids=[e for e, _ in REFUSED_ESTIMATORS]
)
def test_estimators_outside_the_allowed_modules_are_refused(
    tmp_path: Path, estimator: str, expected: str
) -> None:
    training = json.dumps({"estimator": estimator})
    rc, err, message, took = run_cli(tmp_path, "train", "--cycle", "1", "--training", training)
    assert rc == 1, err
    assert took < BOUND_SECONDS
    assert err.strip().startswith("modelcycle-trainer train: error: "), err
    assert expected in err, err
    assert expected in message["error"]
