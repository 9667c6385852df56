"""Property-based ModelCycle specs: the operator's decision handles or refuses every one.

Specs are generated from the CRD's own openAPIV3Schema (``crds/``): every property,
enum, pattern, range and nested object the schema names, with values that are mostly
inside the schema and sometimes outside it (a wrong type, a number out of range, an
unknown enum value, a required field missing). Each spec goes into the pure decision
(:func:`modelcycle_operator.pure.decide.decide`) through the ``World`` of the operator's
unit tests, which plays the API server and the controllers:

- it never raises;
- a spec it cannot use is ``Stalled=True, reason=InvalidSpec`` with a message that starts
  with the offending field's path, and nothing is created;
- otherwise the first cycle starts (or the object is Suspended), runs to its end, and the
  decision converges: fed its own output, it asks for nothing more and changes nothing.

``tests/integration/test_reliability.py`` sends the same specs to the real API server
(``dryRun=All``) and feeds what it accepts, defaulted, through :func:`check_decide`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcycle_operator.pure.decide import EmitEvent
from modelcycle_operator.pure.observed import Observed
from unit.operator.modelcycle_fakes import UID, World

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "modelcycle.dev_modelcycles.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
N_EXAMPLES = 600
#: One leaf in this many is drawn outside its schema.
OUTSIDE = 60

json_leaf = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=8)
json_values = st.recursive(
    json_leaf | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


#: Fields whose useful range only the CRD's CEL rules state (the schema says "number").
FIELDS: dict[str, st.SearchStrategy[Any]] = {}


# Hypothesis draws the bounds of an integer range far more often than the middle, so the
# rare branches below are keyed to middle values.
RARE = 37


def _mostly(inside: st.SearchStrategy[Any], outside: st.SearchStrategy[Any]) -> Any:
    return st.integers(0, OUTSIDE - 1).flatmap(lambda n: outside if n == RARE else inside)


def _wrong_type(kind: str | None) -> st.SearchStrategy[Any]:
    others = {
        "string": st.integers(-5, 5) | st.booleans() | st.lists(st.text(max_size=3), max_size=2),
        "integer": st.text(max_size=5) | st.floats(-1e6, 1e6) | st.booleans(),
        "number": st.text(max_size=5) | st.booleans() | st.lists(st.integers(), max_size=2),
        "boolean": st.sampled_from(["true", "yes", 1, 0, None]),
        "object": st.text(max_size=5) | st.lists(st.integers(), max_size=2) | st.integers(),
    }
    return others.get(kind or "", json_values)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for values of ``schema``: mostly inside it, sometimes outside."""
    kind = schema.get("type")
    inside: st.SearchStrategy[Any]
    if schema.get("x-kubernetes-int-or-string"):
        pattern = schema.get("pattern")
        text = st.from_regex(pattern, fullmatch=True) if pattern else st.text(max_size=8)
        inside = st.integers(0, 64) | text.filter(lambda s: len(s) < 12)
        outside: st.SearchStrategy[Any] = st.text(max_size=6) | st.booleans()
    elif kind == "object":
        props = schema.get("properties")
        if props:
            required = set(schema.get("required") or ())
            fields = {k: FIELDS[k] if k in FIELDS else from_schema(v) for k, v in props.items()}
            inside = st.fixed_dictionaries(
                {k: v for k, v in fields.items() if k in required},
                optional={k: v for k, v in fields.items() if k not in required},
            )
            # Sometimes a required field is missing, sometimes an unknown one is added.
            inside = st.tuples(inside, st.integers(0, 29), st.text(max_size=6)).map(
                lambda t, req=sorted(required): _perturb(t[0], t[1], t[2], req)
            )
        elif "additionalProperties" in schema:
            inside = st.dictionaries(
                st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]) | st.text(max_size=6),
                from_schema(schema["additionalProperties"]),
                max_size=3,
            )
        else:  # x-kubernetes-preserve-unknown-fields: free-form
            inside = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
        outside = _wrong_type("object")
    elif kind == "string":
        if "enum" in schema:
            inside = st.sampled_from(schema["enum"])
            outside = st.text(max_size=10) | _wrong_type("string")
        elif "pattern" in schema:
            limit = schema.get("maxLength", 64)
            inside = st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s, n=limit: len(s) <= n
            )
            outside = st.text(max_size=12) | _wrong_type("string")
        else:
            inside = st.text(min_size=schema.get("minLength", 0), max_size=16)
            outside = _wrong_type("string")
    elif kind == "integer":
        lo, hi = schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)
        inside = st.integers(lo, hi)
        outside = st.integers(lo - 3, lo - 1) | st.integers(hi + 1, hi + 3) | _wrong_type(kind)
    elif kind == "number":
        lo, hi = schema.get("minimum", -1e6), schema.get("maximum", 1e6)
        inside = st.floats(lo, hi, allow_nan=False)
        if float(lo).is_integer() and float(hi).is_integer():
            inside = inside | st.integers(int(lo), int(hi))
        outside = st.floats(lo - 2, lo, exclude_max=True) | st.floats(hi, hi + 2, exclude_min=True)
        outside = outside | _wrong_type(kind)
    elif kind == "boolean":
        inside = st.booleans()
        outside = _wrong_type(kind)
    else:
        inside = json_values
        outside = json_values
    if schema.get("nullable"):
        inside = inside | st.none()
    return _mostly(inside, outside)


def _perturb(value: Any, roll: int, extra: str, required: list[str]) -> Any:
    if not isinstance(value, dict):
        return value
    value = dict(value)
    if roll == 17 and required:
        value.pop(required[0], None)
    elif roll == 23 and extra:
        value[extra] = "unknown"
    return value


def _one_source(spec: Any, roll: int) -> Any:
    """Mostly exactly one data source (the CRD's CEL rule), as a user would write it."""
    if not isinstance(spec, dict) or not isinstance(spec.get("data"), dict) or roll == 5:
        return spec
    data = dict(spec["data"])
    sources = [s for s in ("builtin", "url", "file") if s in data]
    for extra in sources[1:]:
        del data[extra]
    if roll == 6:
        data.pop("builtin", None)
    return {**spec, "data": data}


FIELDS["threshold"] = st.integers(0, 9).flatmap(
    lambda n: st.floats(-2, 1e6, allow_nan=False) if n == 5 else st.floats(0, 1)
)
specs = st.tuples(from_schema(SPEC_SCHEMA), st.integers(0, 9)).map(lambda t: _one_source(*t))


def body_of(spec: Any, name: str = "fuzz") -> dict[str, Any]:
    return {
        "apiVersion": "modelcycle.dev/v1alpha1",
        "kind": "ModelCycle",
        "metadata": {"name": name, "namespace": "ml", "uid": UID, "generation": 1},
        "spec": spec,
    }


class FuzzWorld(World):
    """The World, reading the claim name the way ``reconcile.observe`` does (any spec)."""

    def observe(self) -> Observed:
        real = self.body
        spec = real.get("spec")
        artifacts = spec.get("artifacts") if isinstance(spec, Mapping) else None
        claim = str(artifacts.get("existingClaim") or "") if isinstance(artifacts, Mapping) else ""
        self.body = {**real, "spec": {"artifacts": {"existingClaim": claim}}}
        try:
            return super().observe()
        finally:
            self.body = real


def _condition(world: World, type_: str) -> dict[str, Any]:
    for c in world.status.get("conditions") or ():
        if c["type"] == type_:
            return dict(c)
    return {}


def _assert_fixed_point(world: World) -> None:
    """Fed its own output, the decision asks for nothing and changes nothing."""
    before = copy.deepcopy(world.status)
    for _ in range(2):
        decision = world.reconcile()
        actions = [a for a in decision.actions if not isinstance(a, EmitEvent)]
        assert not actions, actions
        assert not [a for a in decision.actions if isinstance(a, EmitEvent)], decision.actions
        assert decision.status == before, json.dumps([before, decision.status])[:3000]


def _assert_confined(world: World, body: dict[str, Any]) -> None:
    """No spec makes the operator touch another namespace: every object it creates or
    applies is in the ModelCycle's own namespace and owned by it (so it goes with it)."""
    namespace = body["metadata"]["namespace"]
    for decision in world.decisions:
        for action in decision.actions:
            manifest = getattr(action, "manifest", None)
            if manifest is None:
                continue
            meta = manifest["metadata"]
            assert meta.get("namespace") == namespace, (type(action).__name__, meta)
            owners = [o.get("uid") for o in meta.get("ownerReferences") or ()]
            assert owners == [body["metadata"]["uid"]], (type(action).__name__, meta)
            refs = json.dumps(manifest["spec"])
            assert '"namespace"' not in refs.replace('"fieldPath": "metadata.namespace"', ""), refs


def check_decide(body: dict[str, Any]) -> str:
    """Walk ``body`` through the decision; return the outcome (InvalidSpec, Suspended, a step)."""
    world = FuzzWorld(copy.deepcopy(body))
    try:
        return _check_decide(world, body)
    finally:
        _assert_confined(world, body)


def _check_decide(world: FuzzWorld, body: dict[str, Any]) -> str:
    world.settle()
    stalled = _condition(world, "Stalled")
    name = body["metadata"]["name"]
    if stalled.get("reason") == "InvalidSpec":
        assert stalled["status"] == "True"
        assert stalled["message"].startswith(("spec", "metadata.")), stalled["message"]
        assert not world.creates, world.creates
        assert world.status["step"] == "Failed"
        _assert_fixed_point(world)
        return "InvalidSpec"
    if world.status.get("step") == "Suspended":
        assert world.status.get("cycle", 0) == 0
        assert not [c for c in world.creates if c.startswith("Job/")]
        _assert_fixed_point(world)
        return "Suspended"
    assert world.status["cycle"] == 1, world.status
    assert f"Job/{name}-train-1" in world.creates, world.creates
    world.run_cycle()
    world.settle()
    step = str(world.status["step"])
    assert step in ("Serving", "Rejected", "Failed"), world.status
    history = world.status.get("history") or []
    assert [h["cycle"] for h in history] == [1], history
    _assert_fixed_point(world)
    assert len([c for c in world.creates if c == f"Job/{name}-train-1"]) == 1
    return step


@settings(
    max_examples=N_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(specs)
def test_decide_handles_or_refuses_every_generated_spec(spec: Any) -> None:
    check_decide(body_of(spec))


def test_the_generated_specs_reach_every_outcome() -> None:
    """The corpus above is not all refusals: it starts, finishes and refuses cycles."""
    seen: dict[str, int] = {}

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(specs)
    def run(spec: Any) -> None:
        outcome = check_decide(body_of(spec))
        seen[outcome] = seen.get(outcome, 0) + 1

    run()
    assert seen.get("InvalidSpec", 0) > 0, seen
    assert sum(n for k, n in seen.items() if k != "InvalidSpec") > 0, seen
