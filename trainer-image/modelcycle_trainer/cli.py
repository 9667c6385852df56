"""`modelcycle-trainer`: the workload's command line (collect, train, evaluate, serve).

Purpose: parse arguments, run one step, and report the outcome the way the operator
reads it: a compact JSON object (at most 4096 bytes) in the termination log
(`--termination-log`, default `/dev/termination-log`) and on stdout, exit code 0. On
failure: exit code 1 (2 for a usage error: bad flags or unparsable JSON arguments), one
line `modelcycle-trainer <step>: error: <what is wrong>` on stderr, and
`{"error": "..."}` in the termination log. Set `MODELCYCLE_DEBUG=1` for tracebacks.

JSON arguments (`--data`, `--training`, `--evaluation`) take the JSON text itself, or
`@PATH` to read it from a file.

Limits: the step modules (and scikit-learn) are imported only by the subcommand that
needs them, so `--help` and usage errors are fast. The default termination-log path is
silently skipped when it cannot be written (outside Kubernetes).
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
    text = dumps_compact(payload)
    if len(text.encode("utf-8")) > TERMINATION_LIMIT and "error" in payload:
        msg = str(payload["error"])
        while len(text.encode("utf-8")) > TERMINATION_LIMIT and msg:
            msg = msg[: max(0, len(msg) - max(16, len(text.encode("utf-8")) - TERMINATION_LIMIT))]
            text = dumps_compact({"error": msg + "..."})
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


def _run(args: argparse.Namespace) -> JSONDict:
    artifacts: Path = args.artifacts
    if args.command == "collect":
        from modelcycle_trainer import collect

        data = _json_arg(args.data, "--data")
        return collect.run(artifacts, args.cycle, data)
    if args.command == "train":
        from modelcycle_trainer import train

        training = _json_arg(args.training, "--training")
        evaluation = None if args.evaluation is None else _json_arg(args.evaluation, "--evaluation")
        return train.run(artifacts, args.cycle, training, args.allowed_modules, evaluation)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    log, command = _prescan(argv)
    label = PROG if command == "?" else f"{PROG} {command}"
    try:
        args = build_parser().parse_args(argv)
        message = _run(args)
    except UsageError as exc:
        print(f"{label}: usage error: {exc.message}", file=sys.stderr)
        write_termination_log(log, {"error": f"usage: {exc.message}"})
        return 2
    except WorkloadError as exc:
        print(f"{label}: error: {exc.message}", file=sys.stderr)
        write_termination_log(log, {"error": exc.message})
        return 1
    except KeyboardInterrupt:
        print(f"{label}: interrupted", file=sys.stderr)
        write_termination_log(log, {"error": "interrupted"})
        return 130
    except MemoryError:
        print(f"{label}: error: out of memory", file=sys.stderr)
        write_termination_log(log, {"error": "out of memory"})
        return 1
    except Exception as exc:  # noqa: BLE001 - last resort: report any bug as one line
        if os.environ.get("MODELCYCLE_DEBUG"):
            traceback.print_exc()
        text = f"internal error: {type(exc).__name__}: {exc}"
        print(f"{label}: error: {' '.join(text.split())}", file=sys.stderr)
        write_termination_log(log, {"error": text})
        return 1
    if args.command != "serve":
        print(dumps_compact(message), flush=True)
        write_termination_log(args.termination_log, message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
