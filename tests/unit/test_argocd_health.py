"""The Argo CD health check (argocd/health/modelcycle.dev/ModelCycle), run by real Lua 5.1.

Argo CD runs ``health.lua`` with gopher-lua (Lua 5.1) and the object as the global
``obj``. Here each ``testdata`` object from ``health_test.yaml`` is turned into a Lua table
literal (in Python), handed to the script by a small harness under ``lua5.1`` (Debian's
``lua5.1`` package, which CI installs: a missing interpreter fails these tests), and the
returned ``hs.status`` and ``hs.message`` are compared with the expected ones. The copy of
the script in ``argocd/argocd-cm-patch.yaml`` must be the same script.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CUSTOMIZATION = ROOT / "argocd" / "health" / "modelcycle.dev" / "ModelCycle"
SCRIPT = CUSTOMIZATION / "health.lua"
CASES = yaml.safe_load((CUSTOMIZATION / "health_test.yaml").read_text())["tests"]
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
SEPARATOR = "\x1e"


def lua_interpreter() -> str:
    found = shutil.which("lua5.1")
    if found is None:
        pytest.fail("lua5.1 is not installed (apt-get install -y lua5.1): Argo CD runs Lua 5.1")
    return found


def lua_string(text: str) -> str:
    """A Lua 5.1 string literal: printable ASCII as is, every other byte as \\ddd."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def to_lua(value: Any) -> str:
    """YAML data as a Lua table constructor, the way Argo CD hands objects to Lua."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value), value
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        # Keys with a nil value are simply absent, as in Argo CD's conversion.
        items = [f"[{lua_string(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot convert {value!r}")


HARNESS = """
obj = {obj}
local chunk = assert(loadfile({script}))
local ok, hs = pcall(chunk)
if not ok then
  io.stderr:write("health.lua failed: " .. tostring(hs) .. "\\n")
  os.exit(2)
end
if type(hs) ~= "table" then
  io.stderr:write("health.lua returned " .. type(hs) .. ", not a table\\n")
  os.exit(3)
end
io.write(tostring(hs.status), {sep}, tostring(hs.message))
"""


def health(obj: dict[str, Any], script: Path = SCRIPT) -> tuple[str, str]:
    program = HARNESS.format(
        obj=to_lua(obj), script=lua_string(str(script)), sep=lua_string(SEPARATOR)
    )
    res = subprocess.run(
        [lua_interpreter(), "-"], input=program, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    status, message = res.stdout.split(SEPARATOR, 1)
    return status, message


def test_lua_literals_round_trip_through_lua() -> None:
    """The converter itself, checked by Lua: nested tables, arrays, escapes, UTF-8."""
    obj = {"a": [1, 2.5, True], "b": {"c": 'q"uo\\te\nline', "d": None}, "é": "ü"}
    program = (
        f"local t = {to_lua(obj)}\n"
        "assert(t.a[1] == 1 and t.a[2] == 2.5 and t.a[3] == true and #t.a == 3)\n"
        'assert(t.b.c == "q\\"uo\\\\te\\nline" and t.b.d == nil)\n'
        'io.write(t["\\195\\169"])\n'
    )
    res = subprocess.run(
        [lua_interpreter(), "-"], input=program, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ü"


def test_runs_on_lua_5_1() -> None:
    res = subprocess.run([lua_interpreter(), "-v"], capture_output=True, text=True, timeout=30)
    assert "Lua 5.1" in res.stdout + res.stderr


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_of_each_testdata_object(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CUSTOMIZATION / case["inputPath"]).read_text())
    assert obj["kind"] == "ModelCycle"
    assert obj["apiVersion"] == "modelcycle.dev/v1alpha1"
    expected = case["healthStatus"]
    assert health(obj) == (expected["status"], expected["message"])


def test_testdata_covers_every_status_and_every_file_is_tested() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} == {
        "Healthy",
        "Progressing",
        "Degraded",
        "Suspended",
    }
    assert all(c["healthStatus"]["status"] in STATUSES for c in CASES)
    tested = {c["inputPath"] for c in CASES}
    assert tested == {f"testdata/{p.name}" for p in (CUSTOMIZATION / "testdata").glob("*.yaml")}


def _object(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.dev/v1alpha1",
        "kind": "ModelCycle",
        "metadata": {"name": "x", "namespace": "ns", "generation": 2},
        "spec": {},
        "status": {"observedGeneration": 2, **status},
    }


def _cond(kind: str, status: str, reason: str = "R", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        # No conditions yet after the generation is observed: still Progressing.
        ([], ("Progressing", "Reconciling")),
        # Conditions are looked up by type, in any order and number (not counted).
        (
            [_cond("Stalled", "False"), _cond("Ready", "True", "ChampionServing", "ok")],
            ("Healthy", "ok"),
        ),
        # A failure reason without a message shows the reason.
        ([_cond("Ready", "False", "EvaluationFailed")], ("Degraded", "EvaluationFailed")),
        ([_cond("Ready", "False", "InvalidSpec", "bad")], ("Degraded", "bad")),
        # A first challenger that failed the gate: nothing serves and nothing will.
        ([_cond("Ready", "False", "ChallengerRejected", "no")], ("Degraded", "no")),
        # Stalled wins over a serving champion: the desired spec is not reached.
        (
            [_cond("Ready", "True", "ChampionServing", "ok"), _cond("Stalled", "True", "X", "s")],
            ("Degraded", "s"),
        ),
        # Not a failure: no champion yet, waiting.
        (
            [_cond("Ready", "False", "NoChampion", "waiting")],
            ("Progressing", "waiting"),
        ),
        (
            [
                _cond("Ready", "Unknown", "Initializing", "first"),
                _cond("Reconciling", "True", "Collecting", "cycle 1"),
            ],
            ("Progressing", "cycle 1"),
        ),
    ],
)
def test_health_rules(conditions: list[dict[str, str]], expected: tuple[str, str]) -> None:
    assert health(_object(conditions=conditions)) == expected


def test_a_stale_status_is_progressing_even_if_it_was_healthy() -> None:
    obj = _object(conditions=[_cond("Ready", "True", "ChampionServing", "ok")])
    obj["status"]["observedGeneration"] = 1
    assert health(obj) == ("Progressing", "Waiting for the operator to observe generation 2")
    del obj["status"]["observedGeneration"]
    assert health(obj)[0] == "Progressing"


def test_suspended_only_once_the_operator_has_seen_it() -> None:
    obj = _object(conditions=[_cond("Ready", "False", "Suspended", "nothing serves")])
    obj["spec"]["suspend"] = True
    assert health(obj) == ("Suspended", "Suspended (spec.suspend): nothing serves")
    obj["metadata"]["generation"] = 3
    assert health(obj)[0] == "Progressing"


def test_argocd_cm_patch_embeds_the_same_script() -> None:
    patch = yaml.safe_load((ROOT / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    embedded = patch["data"]["resource.customizations.health.modelcycle.dev_ModelCycle"]
    assert embedded == SCRIPT.read_text()


def test_embedded_script_gives_the_same_health(tmp_path: Path) -> None:
    patch = yaml.safe_load((ROOT / "argocd" / "argocd-cm-patch.yaml").read_text())
    copy = tmp_path / "health.lua"
    copy.write_text(patch["data"]["resource.customizations.health.modelcycle.dev_ModelCycle"])
    for case in CASES:
        obj = yaml.safe_load((CUSTOMIZATION / case["inputPath"]).read_text())
        assert health(obj, copy) == health(obj)


def test_example_application_points_at_the_health_customization() -> None:
    text = (ROOT / "examples" / "argocd-application.yaml").read_text()
    assert text.startswith("#")
    app = yaml.safe_load(text)
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = app["spec"]["source"]
    assert source["path"] == "examples"
    assert source["directory"]["exclude"] == "argocd-application.yaml"
    assert app["spec"]["destination"]["namespace"]
    assert "resource.customizations.health.modelcycle.dev_ModelCycle" in text
    assert "argocd/argocd-cm-patch.yaml" in text
    assert re.search(r"(?m)^\s*# Placeholder", text)
