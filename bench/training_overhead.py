# ruff: noqa: E501 - long shell command lines
"""Training overhead: the train step's commands against a plain scikit-learn script.

    .venv/bin/python bench/training_overhead.py              # 3 rounds x 8 runs, ~3 min
    .venv/bin/python bench/training_overhead.py --rounds 5 --runs 10

No cluster needed. Both sides run in the project's virtualenv with the environment the pod
gets (HOME=/tmp, PYTHONDONTWRITEBYTECODE=1, MODELCYCLE_ALLOWED_MODULES=sklearn), timed
wall-clock by hyperfine (Debian package; installed with apt-get if missing):

- ``the Job``: exactly the command the operator puts in the training Job's one container
  for examples/iris.yaml (built with ``modelcycle_operator.pure.builders.train_job``:
  ``train --data ...`` collects, fits and evaluates in one process), the artifact volume
  replaced by a temporary directory — what the step costs in a pod;
- ``train``: the same command without ``--data`` (the snapshot collected once beforehand,
  by ``collect`` with the same ``--data``): the fit and its bookkeeping alone;
- ``plain``: ``python -c`` loading iris, splitting it the same way (25 %, seed 42,
  stratified), fitting ``LogisticRegression(max_iter=500)`` and dumping it with skops;
- ``plain + metrics``: the same, then the held-out metrics the train container also
  computes since ``train --evaluation`` (the Job does that work too now; for reference).

Each round runs the commands back to back; ratios are taken within a round and then
summarised (median [min-max]) across rounds. Target: within 1.1x.

Where it is missed, the profile part explains it: ``python -X importtime`` of each command
(the slowest top-level imports, cumulative) and cProfile of the train command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_latency import (
    REPO,
    RESULTS,
    log,
    machine_info,
    render_report,
    summarize,
    versions,
)

BIN = Path(sys.executable).parent
POD_ENV = {
    "HOME": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MODELCYCLE_ALLOWED_MODULES": "sklearn",
}
PLAIN = (
    "from sklearn.datasets import load_iris; "
    "from sklearn.model_selection import train_test_split; "
    "from sklearn.linear_model import LogisticRegression; "
    "import skops.io as sio; "
    "X, y = load_iris(return_X_y=True); "
    "Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y); "
    "m = LogisticRegression(max_iter=500).fit(Xtr, ytr); "
    "sio.dump(m, '{out}')"
)
#: The plain script plus the held-out metrics the train container now also reports.
PLAIN_EVAL = PLAIN + (
    "; from sklearn import metrics as mt; p = m.predict(Xte); pr = m.predict_proba(Xte); "
    "[mt.accuracy_score(yte, p), mt.balanced_accuracy_score(yte, p), "
    "mt.f1_score(yte, p, average='macro'), mt.precision_score(yte, p, average='macro'), "
    "mt.recall_score(yte, p, average='macro'), mt.roc_auc_score(yte, pr, multi_class='ovr'), "
    "mt.confusion_matrix(yte, p)]"
)
IMPORTS = {
    "python -c pass": "pass",
    "import numpy": "import numpy",
    "import sklearn": "import sklearn",
    "import sklearn.linear_model": "import sklearn.linear_model",
    "import sklearn.datasets, sklearn.model_selection": "import sklearn.datasets, sklearn.model_selection",
    "import skops.io": "import skops.io",
    "import modelcycle_trainer.collect": "import modelcycle_trainer.collect",
    "import modelcycle_trainer.train": "import modelcycle_trainer.train",
    "plain script's imports": "from sklearn.datasets import load_iris; "
    "from sklearn.model_selection import train_test_split; "
    "from sklearn.linear_model import LogisticRegression; import skops.io",
}


def job_commands() -> tuple[list[str], list[str], list[str]]:
    """The iris training Job's command as the operator builds it (its one container), and
    from it the same ``train`` without ``--data`` and the ``collect`` of that ``--data``."""
    from modelcycle_operator.pure import builders
    from modelcycle_operator.pure.spec import ModelCycle
    from modelcycle_operator.settings import load_settings

    body = yaml.safe_load((REPO / "examples" / "iris.yaml").read_text())
    body["metadata"].update(namespace="bench", uid="00000000-0000-0000-0000-000000000000")
    mc = ModelCycle.from_body(body)
    pod = builders.train_job(mc, 1, load_settings({}))["spec"]["template"]["spec"]
    if pod.get("initContainers") or len(pod["containers"]) != 1:
        raise SystemExit("the training Job is not one container any more: update this bench")
    job = list(pod["containers"][0]["command"])
    i = job.index("--data")
    train = job[:i] + job[i + 2 :]
    cycle = job[job.index("--cycle") + 1]
    collect = [job[0], "collect", "--artifacts", "/artifacts", "--cycle", cycle, *job[i : i + 2]]
    return job, train, collect


def localize(cmd: list[str], artifacts: Path, term: Path) -> str:
    out = [str(BIN / cmd[0]) if (BIN / cmd[0]).exists() else cmd[0]]
    for arg in cmd[1:]:
        out.append(str(artifacts) if arg == "/artifacts" else arg)
    out += ["--termination-log", str(term)]
    return shlex.join(out)


def hyperfine(
    commands: dict[str, str], runs: int, warmup: int, prepare: dict[str, str] | None = None
) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "h.json"
        argv = [
            "hyperfine",
            "--warmup",
            str(warmup),
            "--runs",
            str(runs),
            "--export-json",
            str(out),
            "--style",
            "none",
        ]
        for name, cmd in commands.items():
            argv += ["-n", name]
            if prepare is not None:
                argv += ["--prepare", prepare.get(name, "true")]
            argv.append(cmd)
        subprocess.run(argv, check=True, env={**os.environ, **POD_ENV}, capture_output=True)
        data = json.loads(out.read_text())
    return {r["command"]: r["times"] for r in data["results"]}


def importtime(cmd: str, top: int = 6) -> list[str]:
    """The slowest top-level imports of one command (cumulative µs), from -X importtime."""
    argv = shlex.split(cmd)
    if argv[0].endswith("modelcycle-trainer"):
        argv = [sys.executable, "-X", "importtime", "-m", "modelcycle_trainer.cli", *argv[1:]]
    else:
        argv = [argv[0], "-X", "importtime", *argv[1:]]
    res = subprocess.run(
        argv, check=False, capture_output=True, text=True, env={**os.environ, **POD_ENV}
    )
    rows = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top level
            rows.append((int(m.group(2)), m.group(4)))
    rows.sort(reverse=True)
    total = sum(c for c, _ in rows)
    return [f"all imports {total / 1e6:.2f} s"] + [f"`{n}` {c / 1e6:.2f} s" for c, n in rows[:top]]


def cprofile(cmd: str, top: int = 8) -> list[str]:
    argv = shlex.split(cmd)
    prof = Path(tempfile.mkdtemp()) / "p.out"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(prof),
            "-m",
            "modelcycle_trainer.cli",
            *argv[1:],
        ],
        check=True,
        capture_output=True,
        env={**os.environ, **POD_ENV},
    )
    code = (
        "import pstats, sys\n"
        f"s = pstats.Stats({str(prof)!r})\n"
        "rows = []\n"
        "for (f, l, fn), (cc, nc, tt, ct, callers) in s.stats.items():\n"
        "    rows.append((ct, f'{f.split(\"site-packages/\")[-1]}:{l}({fn})'))\n"
        "rows.sort(reverse=True)\n"
        "seen = set()\n"
        "for ct, name in rows[:60]:\n"
        "    print(f'{ct:.3f}\\t{name}')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = []
    for line in res.stdout.splitlines():
        ct, name = line.split("\t", 1)
        if any(
            k in name
            for k in ("train.py", "collect.py", "modelio.py", "fit", "dump", "cli.py", "common.py")
        ):
            lines.append(f"`{name}` {float(ct):.2f} s")
        if len(lines) >= top:
            break
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--no-report",
        action="store_true",
        help="only write the JSON; leave bench/RESULTS-operator.md as it is",
    )
    args = ap.parse_args(argv)
    if shutil.which("hyperfine") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "hyperfine"], check=True)
    hv = subprocess.run(
        ["hyperfine", "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out_path = args.out or RESULTS / f"operator-training-{date}.json"
    work = Path(tempfile.mkdtemp(prefix="mc-train-bench-"))
    try:
        job_cmd, train_cmd, collect_cmd = job_commands()
        art = work / "artifacts"
        art.mkdir()
        job = localize(job_cmd, art, work / "term-job")
        train = localize(train_cmd, art, work / "term-train")
        collect = localize(collect_cmd, art, work / "term-collect")
        plain = shlex.join([sys.executable, "-c", PLAIN.format(out=work / "plain.skops")])
        plain_eval = shlex.join(
            [sys.executable, "-c", PLAIN_EVAL.format(out=work / "plain-eval.skops")]
        )
        clean = f"rm -rf {shlex.quote(str(art))}/cycles"
        clean_model = f"rm -rf {shlex.quote(str(art))}/cycles/1/model"
        subprocess.run(
            shlex.split(collect), check=True, env={**os.environ, **POD_ENV}, capture_output=True
        )
        job_name = "the Job (train --data: collect + train in one process)"
        train_name = "train alone (the same command without --data, data collected)"
        commands = {
            job_name: job,
            train_name: train,
            "plain scikit-learn script": plain,
            "plain script + the same metrics": plain_eval,
        }
        prepare = {
            job_name: clean,
            train_name: f"{clean_model}; test -f {art}/cycles/1/data/train.npz || {collect}",
        }
        rounds: list[dict[str, float]] = []
        samples: dict[str, list[float]] = {k: [] for k in commands}
        for r in range(args.rounds):
            res = hyperfine(commands, args.runs, args.warmup, prepare)
            med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
            rounds.append(med)
            for k, v in res.items():
                samples[k] += v
            log(
                f"round {r + 1}: "
                + ", ".join(f"{k.split(' (')[0]} {v:.2f} s" for k, v in med.items())
            )
        keys = list(commands)
        ratios = {
            "pipeline": summarize([rd[keys[0]] / rd[keys[2]] for rd in rounds]),
            "trainOnly": summarize([rd[keys[1]] / rd[keys[2]] for rd in rounds]),
            "pipelineVsPlainWithMetrics": summarize([rd[keys[0]] / rd[keys[3]] for rd in rounds]),
        }
        log("imports (hyperfine)")
        imp = hyperfine(
            {name: shlex.join([sys.executable, "-c", code]) for name, code in IMPORTS.items()},
            max(5, args.runs // 2),
            1,
        )
        fits = []
        for _ in range(3):
            subprocess.run(["bash", "-c", prepare[train_name]], check=True)
            subprocess.run(
                shlex.split(train), check=True, env={**os.environ, **POD_ENV}, capture_output=True
            )
            fits.append(json.loads((work / "term-train").read_text())["fitSeconds"])
        log("profile")
        subprocess.run(["bash", "-c", clean], check=True)
        profile = {
            "the Job (-X importtime)": importtime(job),
            "train alone (-X importtime)": importtime(train),
            "plain (-X importtime)": importtime(plain),
        }
        subprocess.run(["bash", "-c", clean], check=True)
        profile["the Job (cProfile, cumulative)"] = cprofile(job)
        result = {
            "command": "python bench/training_overhead.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine_info(),
            "versions": versions(),
            "hyperfine": hv,
            "commands": commands,
            "wall": {k: summarize(v) for k, v in samples.items()},
            "roundMedians": rounds,
            "ratios": ratios,
            "imports": {k: summarize(v) for k, v in imp.items()},
            "trainFitSeconds": fits,
            "profile": profile,
        }
        result["machine"]["loadavgEnd"] = Path("/proc/loadavg").read_text().split()[:3]
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")
        log(
            f"wrote {out_path}: the Job / plain = {ratios['pipeline'].get('median')}, "
            f"train / plain = {ratios['trainOnly'].get('median')}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_report:
        render_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
