"""The two Dockerfiles, read by a small parser and held to what the chart and code expect.

No image is built here (there is no Docker engine on the development machines); instead
each Dockerfile is parsed into stages and instructions (continuation lines, comments,
exec-form JSON) and checked: multi-stage with a builder, a final stage without build
tools that runs as the non-root user 1000 (the uid the chart's and the operator's pod
securityContexts set), the OCI labels with the project's version and licence, versions
that agree with pyproject.toml / constraints.txt, and an ENTRYPOINT that exists in the
project and is what the chart and the local cluster's node agent run.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from localcluster.nodeagent import resolve_image

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSTRAINTS = {
    m.group(1).lower().replace("_", "-"): m.group(2)
    for m in re.finditer(r"(?m)^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "constraints.txt").read_text())
}


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT / CMD / RUN, else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list), self
        assert all(isinstance(v, str) for v in value), self
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) with defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def expand(self, text: str, stage: Stage | None = None) -> str:
        values = dict(self.args)
        for arg in stage.all("ARG") if stage else []:
            name, _, default = arg.args.partition("=")
            if default:
                values[name.strip()] = default.strip().strip('"')

        def sub(m: re.Match[str]) -> str:
            return values.get(m.group(1) or m.group(2), m.group(0))

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)


def parse(text: str) -> Dockerfile:
    """Dockerfile syntax as far as these files use it (the escape character is `\\`)."""
    logical: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue  # comments and parser directives
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not buffer:
            start = number
        if raw.rstrip().endswith("\\"):
            buffer.append(raw.rstrip()[:-1])
            continue
        buffer.append(raw)
        logical.append((start, " ".join(part.strip() for part in buffer if part.strip())))
        buffer = []
    assert not buffer, "the file ends inside a continued instruction"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, instruction in logical:
        keyword, _, rest = instruction.partition(" ")
        ins = Instruction(keyword.upper(), rest.strip(), line)
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert ins.keyword == "ARG", f"line {line}: only ARG may precede FROM"
            key, _, default = ins.args.partition("=")
            global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages)


def labels(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for ins in stage.all("LABEL"):
        for m in re.finditer(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S+)', ins.args):
            out[m.group(1)] = m.group(2).strip('"')
    return out


IMAGES = {
    "operator": ROOT / "Dockerfile",
    "trainer": ROOT / "trainer-image" / "Dockerfile",
}
ENTRYPOINTS = {
    "operator": ["kopf", "run", "-m", "modelcycle_operator"],
    "trainer": ["modelcycle-trainer"],
}
IMAGE_REFS = {
    "operator": "ghcr.io/modelcycle/operator:0.1.0",
    "trainer": "ghcr.io/modelcycle/trainer:0.1.0",
}
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|build-essential|make|cmake|gfortran|python3?-dev|libc6?-dev|"
    r"pkg-config|cargo|rustc)\b"
)


@pytest.fixture(params=sorted(IMAGES), ids=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    name = str(request.param)
    return name, parse(IMAGES[name].read_text())


# --------------------------------------------------------------------------- the parser


def test_parser_joins_continuations_and_skips_comments() -> None:
    df = parse(
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS build\nRUN a \\\n  # inner comment\n  && b\n"
        'FROM ${BASE}\nLABEL x="1 2" \\\n  y=3\nENTRYPOINT ["p", "q"]\n'
    )
    assert df.args == {"BASE": "python:3.11-slim"}
    assert [(s.base, s.name) for s in df.stages] == [("${BASE}", "build"), ("${BASE}", None)]
    assert df.stages[0].instructions[0].args == "a && b"
    assert labels(df.final) == {"x": "1 2", "y": "3"}
    entrypoint = df.final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert entrypoint.exec_form() == ["p", "q"]
    assert df.expand(df.final.base) == "python:3.11-slim"


# --------------------------------------------------------------------------- the images


def test_multi_stage_from_python_311_slim(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    assert len(df.stages) >= 2
    assert df.stages[0].name == "builder"
    for stage in df.stages:
        assert df.expand(stage.base) == "python:3.11-slim", stage.base
    requires = PYPROJECT["project"]["requires-python"]
    assert requires == ">=3.11", "the base image's Python must satisfy requires-python"


def test_builder_makes_wheels_with_the_constraints(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    runs = " ".join(i.args for i in df.stages[0].all("RUN"))
    assert "pip wheel" in runs
    assert "-c constraints.txt" in runs
    extra = "'.[operator]'" if name == "operator" else " ."
    assert extra in runs


def test_final_stage_has_no_build_tools(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    for ins in df.final.instructions:
        if ins.keyword == "RUN":
            assert not BUILD_TOOLS.search(ins.args), f"line {ins.line}: {ins.args}"
            assert not re.search(r"\b(apt-get|apt|apk)\b.*\binstall\b", ins.args), ins.line
            assert "pip wheel" not in ins.args
            assert "--no-index" in ins.args, "the final stage installs only built wheels"
        if ins.keyword in ("COPY", "ADD"):
            assert "--from=" in ins.args, f"line {ins.line}: source copied into the final image"


def test_final_stage_runs_as_the_chart_user(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    user = df.final.last("USER")
    assert user is not None, "no USER in the final stage"
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit(), "numeric, so that runAsNonRoot can verify it"
    assert int(uid) == 1000
    assert int(gid or uid) == 1000
    # The uid the chart's Deployment and the operator's pods run as.
    deployment = (ROOT / "charts/modelcycle-operator/templates/deployment.yaml").read_text()
    assert re.findall(r"runAsUser: (\d+)", deployment) == ["1000", "1000"]
    builders = ROOT / "operator/modelcycle_operator/pure/builders.py"
    if builders.exists():
        assert re.search(r"(?m)^_UID = 1000$", builders.read_text())
    # USER comes after everything that needs root.
    keywords = [i.keyword for i in df.final.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_oci_labels(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    found = {k: df.expand(v, df.final) for k, v in labels(df.final).items()}
    assert found["org.opencontainers.image.title"] == f"modelcycle-{name}"
    assert found["org.opencontainers.image.source"].startswith("https://github.com/")
    assert found["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert found["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert found["org.opencontainers.image.description"]


def test_every_pinned_version_agrees_with_the_project(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    text = IMAGES[name].read_text()
    pins = re.findall(r"([A-Za-z][A-Za-z0-9_.-]*)==([0-9][^\s'\"\]]*)", text)
    for package, version in pins:
        key = package.lower().replace("_", "-")
        assert CONSTRAINTS.get(key) == version, f"{package}=={version} vs constraints.txt"
    # The image version (ARG VERSION) is the project's.
    version_args = [i.args for s in df.stages for i in s.all("ARG") if i.args.startswith("VERSION")]
    assert version_args == [f"VERSION={PYPROJECT['project']['version']}"]
    # The image the chart and the operator default to carries the same version.
    assert IMAGE_REFS[name].endswith(":" + PYPROJECT["project"]["version"])


def test_constraints_pin_the_direct_dependencies() -> None:
    """What the images install is what pyproject.toml declares."""
    declared = (
        PYPROJECT["project"]["dependencies"]
        + PYPROJECT["project"]["optional-dependencies"]["operator"]
    )
    for requirement in declared:
        package, _, version = requirement.partition("==")
        assert CONSTRAINTS[package.lower().replace("_", "-")] == version, requirement


def test_entrypoint_exists_in_the_project(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    entrypoint = df.final.last("ENTRYPOINT")
    assert entrypoint is not None
    argv = entrypoint.exec_form()
    assert argv == ENTRYPOINTS[name], "exec form, so that signals reach the program"
    if name == "operator":
        assert (ROOT / "operator/modelcycle_operator/__init__.py").exists()
        assert any(
            d.startswith("kopf==")
            for d in PYPROJECT["project"]["optional-dependencies"]["operator"]
        )
    else:
        target = PYPROJECT["project"]["scripts"]["modelcycle-trainer"]
        module, _, function = target.partition(":")
        assert module == "modelcycle_trainer.cli"
        source = ROOT / "trainer-image/modelcycle_trainer/cli.py"
        assert re.search(rf"(?m)^def {function}\(", source.read_text())


def test_entrypoint_is_what_the_chart_and_the_node_agent_run(
    image: tuple[str, Dockerfile],
) -> None:
    name, df = image
    entrypoint = df.final.last("ENTRYPOINT")
    assert entrypoint is not None
    argv = entrypoint.exec_form()
    assert argv is not None
    # The local cluster runs these images from the virtualenv with the same entrypoint.
    emulated = resolve_image(IMAGE_REFS[name])
    assert emulated is not None
    assert list(emulated.entrypoint) == argv
    if name == "operator":
        # The chart sets no command (the ENTRYPOINT runs with the chart's args), except
        # with peering, where a shell execs exactly this entrypoint with a priority.
        deployment = (ROOT / "charts/modelcycle-operator/templates/deployment.yaml").read_text()
        commands = re.findall(r"(?m)^\s*- exec (.+)$", deployment)
        assert len(commands) == 1
        assert commands[0].startswith(" ".join(argv) + " ")
        assert deployment.count("command:") == 1
        assert "{{- if .Values.peering.enabled }}\n" in deployment.split("command:")[0][-400:]
    else:
        naming = ROOT / "operator/modelcycle_operator/pure/naming.py"
        if naming.exists():
            assert f'TRAINER_COMMAND = "{argv[0]}"' in naming.read_text()
        values = (ROOT / "charts/modelcycle-operator/values.yaml").read_text()
        assert "repository: ghcr.io/modelcycle/trainer\n" in values


def test_dockerignore_keeps_the_context_to_what_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**", "exclude everything, then re-include"
    included = {p[1:] for p in patterns if p.startswith("!")}
    for path in IMAGES.values():
        for stage in parse(path.read_text()).stages:
            for ins in stage.all("COPY"):
                if "--from=" in ins.args:
                    continue
                *sources, _ = ins.args.split()
                for source in sources:
                    assert source in included or f"{source.rstrip('/')}/**" in included, source
                    assert (ROOT / source).exists(), source
    for never in (".venv", ".git", "tests", "charts"):
        assert not any(p.startswith(never) for p in included), never
