"""Profile `modelcycle-trainer serve` under load with py-spy (sampling, native-free).

Usage: `python bench/profile_serve.py [--model iris] [--rows 1] [--concurrency 16]
[--seconds 10] [--out bench/results/profile-<stamp>-<label>.txt]`

Creates `bench/.venv-prof` (py-spy 0.4.3 from PyPI) when missing, builds the model with the
project's CLI (as bench/serving.py does), starts our server, drives it with wrk for
`--seconds` while py-spy samples it (pausing it for each sample; `--nonblocking` does not,
at the price of torn stacks), then writes a summary: the share of samples per function,
self and inclusive (`--keep-stacks` also writes the collapsed stacks, for a flame graph).
`--startup` profiles start-up instead: spawn-to-ready with py-spy running the server from
its first line.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving

PROF_VENV = serving.BENCH / ".venv-prof"
PYSPY = PROF_VENV / "bin" / "py-spy"


def ensure_pyspy() -> None:
    if PYSPY.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(PROF_VENV)], check=True)
    subprocess.run(
        [
            str(PROF_VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "py-spy==0.4.3",
        ],
        check=True,
    )


def _function(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`: lines of one function together."""
    name, sep, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if sep else frame


def summarize(collapsed: Path, top: int) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        funcs = [_function(f) for f in frames]
        self_t[funcs[-1]] += count
        for f in set(funcs):
            incl[f] += count
    out = [f"samples: {total}", "", f"top {top} by self time (% of samples):"]
    out += [f"  {c / total * 100:5.1f}%  {f}" for f, c in self_t.most_common(top)]
    out += ["", f"top {top} by inclusive time (% of samples):"]
    out += [f"  {c / total * 100:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="iris", choices=sorted(serving.MODELS))
    ap.add_argument("--rows", type=int, default=1, choices=(1, 32))
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--keep-stacks", action="store_true", help="also write the collapsed stacks")
    ap.add_argument(
        "--nonblocking",
        action="store_true",
        help="sample without pausing the server (less overhead, torn stacks)",
    )
    ap.add_argument("--startup", action="store_true", help="profile start-up instead of load")
    ap.add_argument("--label", default="serve")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    serving.ensure_tools()
    ensure_pyspy()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    kind = "startup" if args.startup else f"{args.model}-{args.rows}x{args.concurrency}"
    out = args.out or serving.BENCH / "results" / f"profile-{stamp}-{args.label}-{kind}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mc-prof-") as tmp:
        work = Path(tmp)
        model = serving.build_model(args.model, work)
        srv = serving.Server(serving.OURS, model, work)
        collapsed = work / "stacks.txt"
        if args.startup:
            cmd = [
                str(PYSPY),
                "record",
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(collapsed),
                "--",
                *srv.cmd,
            ]
            srv.cmd = cmd
            ready = srv.start()
            assert srv.proc is not None
            time.sleep(0.3)
            # end the server (py-spy's child, by its pid) so py-spy writes its output
            for pid in serving._tree(srv.proc.pid)[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                srv.proc.wait(timeout=30)
            finally:
                srv.stop()
            header = (
                f"start-up profile of our server ({args.model}); ready after {ready:.2f} s "
                f"under py-spy (slower than without)\n"
            )
        else:
            srv.start()
            srv.loaded(model)  # after a fast start: the background load is done before sampling
            serving.warm_up(srv, model, work)
            assert srv.proc is not None
            spy = subprocess.Popen(
                [
                    str(PYSPY),
                    "record",
                    "--pid",
                    str(srv.proc.pid),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(int(args.seconds)),
                    "--format",
                    "raw",
                    "--output",
                    str(collapsed),
                    *(["--nonblocking"] if args.nonblocking else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
            r = serving.wrk_cell(
                srv, model.bodies[args.rows], args.concurrency, args.seconds - 1, work
            )
            spy.wait(timeout=args.seconds + 60)
            srv.stop()
            header = (
                f"load profile of our server: {args.model}, {args.rows} row(s), "
                f"concurrency {args.concurrency}; during it {r['rps']:.0f} req/s, p50 "
                f"{r['p50_us']:.0f} µs, CPU {r['cpu_us_per_req']:.0f} µs/req (py-spy "
                f"at {args.rate} Hz adds a little)\n"
            )
        text = (
            header
            + "serve.py sha256 "
            + serving.versions()["serve.py sha256"]
            + "\n"
            + summarize(collapsed, args.top)
        )
        out.write_text(text)
        if args.keep_stacks:  # for a flame graph (e.g. speedscope, inferno)
            out.with_suffix(".collapsed").write_text(collapsed.read_text())
    print(text)
    print(f"written: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
