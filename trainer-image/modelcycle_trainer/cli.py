"""`modelcycle-trainer`: the workload's command line (collect, train, evaluate, serve).

Purpose: parse arguments, run one step, and report the outcome the way the operator
reads it: a compact JSON object (at most 4096 bytes) in the termination log
(`--termination-log`, default `/dev/termination-log`) and on stdout, exit code 0. On
failure: exit code 1 (2 for a usage error: bad flags or unparsable JSON arguments), one
line `modelcycle-trainer <step>: error: <what is wrong>` on stderr, and
`{"error": "..."}` in the termination log. Set `MODELCYCLE_DEBUG=1` for tracebacks.

JSON arguments (`--data`, `--training`, `--evaluation`) take the JSON text itself, or
`@PATH` to read it from a file.

`train --data JSON` (what the operator's training Job runs: one container, one process)
first collects the cycle's data exactly as `collect` does (`collect.run`: the same snapshot
files, written the same way), then fits. Its message carries collect's under `collected`
(`{"dataHash", "rows", "features", "task"}`). As soon as the data is collected the
termination log already holds `{"stage": "train", "collected": {...}}`, so a container
killed later (out of memory, deadline) still says its data was collected; the final
message replaces it. An error payload says which stage failed: `"stage": "collect"` (the
stderr line reads `modelcycle-trainer train: error during collect: <what is wrong>`) or
`"stage": "train"` (with `collected` once the data is collected; the checks made before
collecting, such as a refused estimator, are the train stage too). The `collect`
subcommand stays as it was.

Limits: the step modules (and scikit-learn) are imported only by the subcommand that
needs them, so `--help` and usage errors are fast. The default termination-log path is
silently skipped when it cannot be written (outside Kubernetes). Run as the installed
`modelcycle-trainer` program (`main()` without arguments), a one-shot subcommand (collect,
train, evaluate) ends with `os._exit` once stdout and stderr are flushed: the interpreter's
teardown of the ~1700 modules scikit-learn and skops load takes about 0.3 s and writes
nothing (every artifact is already fsynced, renamed and closed, and so is the termination
log). Not when the process has children (joblib workers: the normal exit stops them).
`main(argv)` (the tests) and `python -m modelcycle_trainer.cli` (profilers) return and
exit normally.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from modelcycle_trainer.common import JSONDict, UsageError, WorkloadError, dumps_compact

PROG = "modelcycle-trainer"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error that also lands in the termination log."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def write_termination_log(path: str, payload: JSONDict) -> None:
    """Write `payload` compactly; an error message too long for the limit is shortened
    (the other keys, such as `stage` and `collected`, are kept)."""
    text = dumps_compact(payload)
    if len(text.encode("utf-8")) > TERMINATION_LIMIT and "error" in payload:
        rest = {k: v for k, v in payload.items() if k != "error"}
        room = TERMINATION_LIMIT - len(dumps_compact({"error": "...", **rest}).encode("utf-8"))
        msg = str(payload["error"]).encode("utf-8")[: max(0, room)].decode("utf-8", "ignore")
        text = dumps_compact({"error": msg + "...", **rest})
        while len(text.encode("utf-8")) > TERMINATION_LIMIT and msg:  # JSON escapes grew it
            excess = len(text.encode("utf-8")) - TERMINATION_LIMIT
            msg = msg[: max(0, len(msg) - max(1, excess // 6))]  # at most 6 bytes a character
            text = dumps_compact({"error": msg + "...", **rest})
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        if path != DEFAULT_TERMINATION_LOG:
            print(f"{PROG}: warning: cannot write termination log {path}: {exc}", file=sys.stderr)


def _json_arg(value: str, flag: str) -> Any:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{flag}: cannot read {value[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc}") from None


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _port(value: str) -> int:
    n = _positive_int(value)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {n}")
    return n


def _fraction(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 < x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return x


def _seconds(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= x <= 86400.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 86400, got {value}")
    return x


def _modules(value: str) -> list[str]:
    from modelcycle_trainer.train import parse_allowed_modules

    return parse_allowed_modules(value)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--artifacts", type=Path, default=Path("/artifacts"), help="artifact volume directory"
    )
    common.add_argument(
        "--termination-log",
        default=DEFAULT_TERMINATION_LOG,
        help="where to write the JSON outcome (default: %(default)s)",
    )
    parser = _Parser(prog=PROG, description="ModelCycle workload: collect, train, evaluate, serve")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("collect", parents=[common], help="snapshot the data of a cycle")
    p.add_argument("--cycle", type=_positive_int, required=True)
    p.add_argument("--data", required=True, help="the spec's data section as JSON (or @file)")

    p = sub.add_parser("train", parents=[common], help="fit and save the model of a cycle")
    p.add_argument("--cycle", type=_positive_int, required=True)
    p.add_argument("--training", required=True, help="the spec's training section as JSON")
    p.add_argument("--allowed-modules", type=_modules, default=["sklearn"], metavar="PKG,...")
    p.add_argument(
        "--evaluation",
        default=None,
        help="the spec's evaluation section as JSON: also evaluate the fitted model "
        "(metrics.json, and metrics in the message), as the evaluate subcommand does",
    )
    p.add_argument(
        "--data",
        default=None,
        help="the spec's data section as JSON: first collect the cycle's data in this "
        "process, as the collect subcommand does (its message under 'collected')",
    )

    p = sub.add_parser("evaluate", parents=[common], help="score a cycle's model")
    p.add_argument("--cycle", type=_positive_int, required=True)
    p.add_argument("--evaluation", default="{}", help="the spec's evaluation section as JSON")
    p.add_argument("--allowed-modules", type=_modules, default=["sklearn"], metavar="PKG,...")

    p = sub.add_parser("serve", parents=[common], help="serve a model over HTTP")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--port", type=_port, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--allowed-modules", type=_modules, default=["sklearn"], metavar="PKG,...")
    p.add_argument("--max-body-bytes", type=_positive_int, default=16 * 1024 * 1024)
    p.add_argument(
        "--recent-requests",
        type=int,
        default=10_000,
        help="request ids remembered for feedback (0: none)",
    )
    p.add_argument(
        "--recent-inputs",
        type=int,
        default=1000,
        help="input rows kept for drift and GET /v2/models/{m}/inputs (0: none)",
    )
    p.add_argument(
        "--drift-p-value",
        type=_fraction,
        default=0.05,
        help="family-wise p-value of the per-feature drift tests (Bonferroni; default 0.05)",
    )
    p.add_argument(
        "--drift-fraction",
        type=_fraction,
        default=0.5,
        help="share of drifted features that makes the input drifted (default 0.5)",
    )
    p.add_argument(
        "--drift-min-rows",
        type=_positive_int,
        default=30,
        help="recent input rows needed before drift is reported (default 30)",
    )
    p.add_argument(
        "--drift-interval",
        type=_seconds,
        default=5.0,
        help="recompute drift at most this often, in seconds, when scraped (default 5)",
    )
    p.add_argument(
        "--no-fast-path",
        action="store_true",
        help="always call the model's own predict (no verified direct path)",
    )
    return parser


def _run(args: argparse.Namespace, progress: JSONDict) -> JSONDict:
    """Run the subcommand; `progress` is what an error payload adds (`stage`, `collected`)."""
    artifacts: Path = args.artifacts
    if args.command == "collect":
        from modelcycle_trainer import collect

        data = _json_arg(args.data, "--data")
        return collect.run(artifacts, args.cycle, data)
    if args.command == "train":
        from modelcycle_trainer import train

        training = _json_arg(args.training, "--training")
        evaluation = None if args.evaluation is None else _json_arg(args.evaluation, "--evaluation")
        if args.data is None:
            return train.run(artifacts, args.cycle, training, args.allowed_modules, evaluation)
        data = _json_arg(args.data, "--data")
        progress["stage"] = "train"
        train.check_spec(training, args.allowed_modules, evaluation)  # before collecting
        from modelcycle_trainer import collect

        progress["stage"] = "collect"
        collected = collect.run(artifacts, args.cycle, data)
        progress.update(stage="train", collected=collected)
        write_termination_log(args.termination_log, progress)  # if the fit is killed
        message = train.run(artifacts, args.cycle, training, args.allowed_modules, evaluation)
        return {**message, "collected": collected}
    if args.command == "evaluate":
        from modelcycle_trainer import evaluate

        evaluation = _json_arg(args.evaluation, "--evaluation")
        return evaluate.run(artifacts, args.cycle, evaluation, args.allowed_modules)
    from modelcycle_trainer import serve

    config = serve.ServeConfig(
        name=args.name,
        version=args.version,
        model_dir=args.model_dir,
        artifacts=artifacts,
        allowed_modules=tuple(args.allowed_modules),
        max_body_bytes=args.max_body_bytes,
        recent_requests=max(0, args.recent_requests),
        recent_inputs=max(0, args.recent_inputs),
        fast_path=not args.no_fast_path,
        drift_p_value=args.drift_p_value,
        drift_fraction=args.drift_fraction,
        drift_min_rows=args.drift_min_rows,
        drift_interval=args.drift_interval,
    )
    stop_message: JSONDict = {"stopped": True, "model": args.name, "version": args.version}
    serve.run(
        config,
        args.host,
        args.port,
        on_stop=lambda: write_termination_log(args.termination_log, stop_message),
    )
    return stop_message


def _prescan(argv: Sequence[str]) -> tuple[str, str]:
    """Termination log and subcommand, found even when argument parsing fails."""
    log, command = DEFAULT_TERMINATION_LOG, "?"
    for i, arg in enumerate(argv):
        if arg == "--termination-log" and i + 1 < len(argv):
            log = argv[i + 1]
        elif arg.startswith("--termination-log="):
            log = arg.split("=", 1)[1]
        elif command == "?" and arg in ("collect", "train", "evaluate", "serve"):
            command = arg
    return log, command


def main(argv: Sequence[str] | None = None) -> int:
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    log, command = _prescan(argv)
    rc = _main(argv, log, command)
    if as_program and command in ("collect", "train", "evaluate") and not _has_children():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)  # skip the interpreter's teardown (see the module doc)
    return rc


def _has_children() -> bool:
    """True when this process has child processes (e.g. joblib workers an estimator with
    n_jobs started, which a normal exit shuts down), or when that cannot be told."""
    try:
        return any(p.read_text().strip() for p in Path("/proc/self/task").glob("*/children"))
    except OSError:
        return True


def _main(argv: list[str], log: str, command: str) -> int:
    label = PROG if command == "?" else f"{PROG} {command}"
    progress: JSONDict = {}

    def fail(kind: str, text: str, error: str) -> None:
        """One stderr line (naming the stage of `train --data`) and the error payload."""
        stage = progress.get("stage")
        during = f" during {stage}" if stage else ""
        line = f"{label}: {kind}{during}" + (f": {text}" if text else "")
        print(line, file=sys.stderr)
        write_termination_log(log, {"error": error, **progress})

    try:
        args = build_parser().parse_args(argv)
        message = _run(args, progress)
    except UsageError as exc:
        fail("usage error", exc.message, f"usage: {exc.message}")
        return 2
    except WorkloadError as exc:
        fail("error", exc.message, exc.message)
        return 1
    except KeyboardInterrupt:
        fail("interrupted", "", "interrupted")
        return 130
    except MemoryError:
        fail("error", "out of memory", "out of memory")
        return 1
    except Exception as exc:  # noqa: BLE001 - last resort: report any bug as one line
        if os.environ.get("MODELCYCLE_DEBUG"):
            traceback.print_exc()
        text = f"internal error: {type(exc).__name__}: {exc}"
        fail("error", " ".join(text.split()), text)
        return 1
    if args.command != "serve":
        print(dumps_compact(message), flush=True)
        write_termination_log(args.termination_log, message)
    return 0


if __name__ == "__main__":
    # `python -m modelcycle_trainer.cli` (profilers, coverage): argv given, a normal exit.
    sys.exit(main(sys.argv[1:]))
