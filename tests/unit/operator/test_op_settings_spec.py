"""Settings from the environment / YAML, and the typed spec model with mirrored defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from modelcycle_fakes import make_body, make_spec

from modelcycle_operator.pure.spec import ModelCycle, SpecError, parse_spec
from modelcycle_operator.settings import Settings, SettingsError, load_settings


class TestSettings:
    def test_defaults(self) -> None:
        settings = load_settings({})
        assert settings == Settings()
        assert settings.image == "ghcr.io/modelcycle/trainer:0.1.0"
        assert settings.allowed_estimator_modules == ("sklearn",)
        assert settings.timer_seconds == 10
        assert settings.idle_resync == 300
        assert settings.max_workers == 8
        assert settings.prefix == "modelcycle.dev"
        assert settings.clusterwide
        assert settings.watches("anything")

    def test_environment(self) -> None:
        settings = load_settings(
            {
                "MODELCYCLE_NAMESPACES": "ml, team-b,,ml",
                "MODELCYCLE_IMAGE": "example.org/trainer:2",
                "MODELCYCLE_ALLOWED_ESTIMATOR_MODULES": "sklearn,xgboost",
                "MODELCYCLE_DEFAULT_CPU_REQUEST": "250m",
                "MODELCYCLE_DEFAULT_MEMORY_LIMIT": "",
                "MODELCYCLE_TIMER_SECONDS": "2.5",
                "MODELCYCLE_IDLE_RESYNC_SECONDS": "45",
                "MODELCYCLE_MAX_WORKERS": "12",
                "MODELCYCLE_PREFIX": "example.org",
            }
        )
        assert settings.namespaces == ("ml", "team-b")
        assert not settings.clusterwide
        assert settings.watches("ml")
        assert not settings.watches("other")
        assert settings.image == "example.org/trainer:2"
        assert settings.allowed_modules_arg == "sklearn,xgboost"
        assert settings.timer_seconds == 2.5
        assert settings.idle_resync == 45
        assert settings.max_workers == 12
        assert settings.prefix == "example.org"
        assert settings.default_resources() == {"requests": {"cpu": "250m", "memory": "256Mi"}}

    def test_yaml_overrides_environment(self, tmp_path: Path) -> None:
        config = tmp_path / "settings.yaml"
        config.write_text(
            "image: example.org/y:1\nallowed_estimator_modules: [sklearn, lightgbm]\n"
        )
        settings = load_settings(
            {"MODELCYCLE_IMAGE": "example.org/env:1", "MODELCYCLE_CONFIG": str(config)}
        )
        assert settings.image == "example.org/y:1"
        assert settings.allowed_estimator_modules == ("sklearn", "lightgbm")

    @pytest.mark.parametrize(
        ("env", "match"),
        [
            ({"MODELCYCLE_TIMER_SECONDS": "soon"}, "MODELCYCLE_TIMER_SECONDS"),
            ({"MODELCYCLE_TIMER_SECONDS": "0"}, "1..3600"),
            ({"MODELCYCLE_IDLE_RESYNC_SECONDS": "0"}, "MODELCYCLE_IDLE_RESYNC_SECONDS"),
            ({"MODELCYCLE_MAX_WORKERS": "many"}, "MODELCYCLE_MAX_WORKERS"),
            ({"MODELCYCLE_MAX_WORKERS": "0"}, "1..256"),
            ({"MODELCYCLE_NAMESPACES": "Bad_NS"}, "not a valid namespace"),
            ({"MODELCYCLE_ALLOWED_ESTIMATOR_MODULES": "sk-learn"}, "not a Python module"),
            ({"MODELCYCLE_ALLOWED_ESTIMATOR_MODULES": ","}, "at least one module"),
            ({"MODELCYCLE_DEFAULT_CPU_REQUEST": "lots"}, "not a Kubernetes quantity"),
            ({"MODELCYCLE_IMAGE": "has space"}, "MODELCYCLE_IMAGE"),
            ({"MODELCYCLE_PREFIX": "Not_DNS"}, "MODELCYCLE_PREFIX"),
            ({"MODELCYCLE_CONFIG": "/nonexistent/modelcycle.yaml"}, "cannot read"),
        ],
    )
    def test_errors_name_the_variable(self, env: dict[str, str], match: str) -> None:
        with pytest.raises(SettingsError, match=match):
            load_settings(env)

    @pytest.mark.parametrize(
        ("text", "match"),
        [("[1, 2]", "must hold a mapping"), ("imag: x", "unknown keys"), ("a: [", "not YAML")],
    )
    def test_bad_yaml(self, tmp_path: Path, text: str, match: str) -> None:
        config = tmp_path / "c.yaml"
        config.write_text(text)
        with pytest.raises(SettingsError, match=match):
            load_settings({"MODELCYCLE_CONFIG": str(config)})


class TestSpecDefaults:
    def test_empty_spec_is_rejected_for_missing_threshold(self) -> None:
        with pytest.raises(SpecError, match=r"spec\.evaluation\.threshold: is required"):
            parse_spec({})

    def test_defaults_mirror_the_crd(self) -> None:
        spec = parse_spec({"evaluation": {"threshold": 0.8}})
        assert spec.suspend is False
        assert spec.data.source == "builtin"
        assert spec.data.builtin_name == "iris"
        assert (spec.data.target, spec.data.task) == ("target", "auto")
        assert (spec.data.test_fraction, spec.data.seed) == (0.25, 42)
        assert spec.data.include_feedback is True
        assert spec.training.estimator == "sklearn.linear_model.LogisticRegression"
        assert spec.training.parameters == {}
        assert spec.training.preprocessing == "none"
        assert (spec.training.active_deadline_seconds, spec.training.backoff_limit) == (900, 1)
        assert spec.evaluation.metric == "accuracy"
        assert spec.evaluation.compare_with_champion is False
        assert spec.evaluation.min_improvement == 0.0
        assert spec.serving.enabled is True
        assert (spec.serving.replicas, spec.serving.port) == (1, 8080)
        assert spec.serving.progress_deadline_seconds == 180
        assert spec.serving.rollback_on_failure is True
        assert spec.artifacts.size == "1Gi"
        assert spec.cooldown_seconds == 300

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            ({"builtin": {"name": "wine"}}, {"builtin": {"name": "wine"}}),
            (
                {"url": {"url": "https://example.org/d.csv"}},
                {"url": {"url": "https://example.org/d.csv", "format": "csv"}},
            ),
            (
                {"file": {"path": "datasets/x.parquet", "format": "parquet"}},
                {"file": {"path": "datasets/x.parquet", "format": "parquet"}},
            ),
        ],
    )
    def test_data_sources(self, data: dict[str, Any], expected: dict[str, Any]) -> None:
        spec = parse_spec({"data": data, "evaluation": {"threshold": 0.5}})
        serialised = spec.data.to_dict()
        for key, value in expected.items():
            assert serialised[key] == value
        assert {"target", "task", "testFraction", "seed", "includeFeedback"} <= set(serialised)

    def test_lower_is_better_metric_allows_threshold_above_one(self) -> None:
        spec = parse_spec({"evaluation": {"metric": "rmse", "threshold": 12.5}})
        assert spec.evaluation.threshold == 12.5
        assert not spec.evaluation.higher_is_better


class TestSpecErrors:
    @pytest.mark.parametrize(
        ("spec", "match"),
        [
            ({"data": {"builtin": {"name": "iris"}, "url": {"url": "https://x"}}}, "exactly one"),
            ({"data": {"url": {"url": "file:///etc/passwd"}}}, "only http"),
            ({"data": {"url": {}}}, r"spec\.data\.url\.url: is required"),
            ({"data": {"file": {"path": "../escape.csv"}}}, "relative to the artifact volume"),
            ({"data": {"testFraction": 0.99}}, r"testFraction: must be within"),
            ({"data": {"task": "clustering"}}, "must be one of"),
            ({"training": {"estimator": "LogisticRegression"}}, "module.Class"),
            ({"training": {"parameters": [1, 2]}}, "expected an object"),
            ({"training": {"backoffLimit": 11}}, "backoffLimit"),
            ({"training": {"activeDeadlineSeconds": "900"}}, "expected an integer"),
            ({"evaluation": {"metric": "loss", "threshold": 0.5}}, "must be one of"),
            ({"evaluation": {"threshold": 1.5}}, "0..1"),
            ({"evaluation": {"threshold": True}}, "expected a number"),
            ({"serving": {"port": 80}}, "1024..65535"),
            ({"serving": {"enabled": "yes"}}, "true or false"),
            ({"suspend": 1}, "true or false"),
        ],
    )
    def test_bad_fields_name_their_path(self, spec: dict[str, Any], match: str) -> None:
        full = {"evaluation": {"threshold": 0.8}}
        for key, value in spec.items():
            if isinstance(value, dict) and key in full:
                full[key] = {**full[key], **value}
            else:
                full[key] = value
        with pytest.raises(SpecError, match=match):
            parse_spec(full)

    def test_model_cycle_from_body(self) -> None:
        mc = ModelCycle.from_body(make_body(annotations={"a": "b"}, generation=4))
        assert (mc.name, mc.namespace, mc.generation) == ("iris", "ml", 4)
        assert mc.annotations == {"a": "b"}
        assert mc.claim_name == "iris-artifacts"
        existing = ModelCycle.from_body(make_body(spec=make_spec(artifacts={"existingClaim": "x"})))
        assert existing.claim_name == "x"

    @pytest.mark.parametrize("name", ["", "1abc", "a" * 46, "Upper"])
    def test_bad_names(self, name: str) -> None:
        with pytest.raises(SpecError, match=r"metadata\.name"):
            ModelCycle.from_body(make_body(name=name))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@example.org/d.csv?sig=abc#x", "https://example.org/d.csv"),
        ("http://127.0.0.1:9/x.csv", "http://127.0.0.1:9/x.csv"),
    ],
)
def test_url_is_redacted_in_messages(url: str, shown: str) -> None:
    spec = parse_spec({"data": {"url": {"url": url}}, "evaluation": {"threshold": 0.5}})
    assert spec.data.describe() == shown
    assert spec.data.to_dict()["url"]["url"] == url


@pytest.mark.parametrize(("threshold", "ok"), [(-0.5, True), (1.0, True), (1.5, False)])
def test_r2_threshold_range(threshold: float, ok: bool) -> None:
    spec = {
        "data": {"builtin": {"name": "diabetes"}},
        "evaluation": {"metric": "r2", "threshold": threshold},
    }
    if ok:
        assert parse_spec(spec).evaluation.threshold == threshold
    else:
        with pytest.raises(SpecError, match="threshold"):
            parse_spec(spec)


class TestReceiverSettings:
    def test_defaults(self) -> None:
        settings = Settings()
        assert (settings.receiver_host, settings.receiver_port) == ("0.0.0.0", 8081)
        assert (settings.receiver_token, settings.receiver_token_file) == ("", "")
        assert (settings.receiver_rate, settings.receiver_burst) == (5.0, 20)
        assert settings.receiver_max_body_bytes == 1024 * 1024

    def test_environment(self) -> None:
        settings = load_settings(
            {
                "MODELCYCLE_RECEIVER_HOST": "127.0.0.1",
                "MODELCYCLE_RECEIVER_PORT": "0",
                "MODELCYCLE_RECEIVER_TOKEN": "  t0ken  ",
                "MODELCYCLE_RECEIVER_RATE": "0.5",
                "MODELCYCLE_RECEIVER_BURST": "3",
                "MODELCYCLE_RECEIVER_MAX_BODY_BYTES": "4096",
            }
        )
        assert settings.receiver_host == "127.0.0.1"
        assert settings.receiver_port == 0
        assert settings.receiver_token == "t0ken"
        assert (settings.receiver_rate, settings.receiver_burst) == (0.5, 3)
        assert settings.receiver_max_body_bytes == 4096

    def test_token_file(self, tmp_path: Path) -> None:
        settings = load_settings({"MODELCYCLE_RECEIVER_TOKEN_FILE": "/var/run/secrets/t"})
        assert settings.receiver_token_file == "/var/run/secrets/t"

    def test_the_token_is_not_in_repr_or_errors(self) -> None:
        settings = load_settings({"MODELCYCLE_RECEIVER_TOKEN": "hunter2"})
        assert "hunter2" not in repr(settings)
        with pytest.raises(SettingsError) as info:
            load_settings(
                {"MODELCYCLE_RECEIVER_TOKEN": "hunter2", "MODELCYCLE_RECEIVER_TOKEN_FILE": "/t"}
            )
        assert "set one of them" in str(info.value)
        assert "hunter2" not in str(info.value)

    @pytest.mark.parametrize(
        ("env", "match"),
        [
            ({"MODELCYCLE_RECEIVER_PORT": "http"}, "MODELCYCLE_RECEIVER_PORT: expected an integer"),
            ({"MODELCYCLE_RECEIVER_PORT": "70000"}, "MODELCYCLE_RECEIVER_PORT: must be within"),
            ({"MODELCYCLE_RECEIVER_PORT": "-1"}, "MODELCYCLE_RECEIVER_PORT: must be within"),
            ({"MODELCYCLE_RECEIVER_HOST": "a b"}, "MODELCYCLE_RECEIVER_HOST"),
            ({"MODELCYCLE_RECEIVER_HOST": ""}, "MODELCYCLE_RECEIVER_HOST"),
            ({"MODELCYCLE_RECEIVER_RATE": "fast"}, "MODELCYCLE_RECEIVER_RATE: expected a number"),
            ({"MODELCYCLE_RECEIVER_RATE": "0"}, "MODELCYCLE_RECEIVER_RATE: must be within"),
            ({"MODELCYCLE_RECEIVER_BURST": "0"}, "MODELCYCLE_RECEIVER_BURST: must be within"),
            ({"MODELCYCLE_RECEIVER_MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES: must be within"),
        ],
    )
    def test_errors_name_the_variable(self, env: dict[str, str], match: str) -> None:
        with pytest.raises(SettingsError, match=match):
            load_settings(env)

    def test_yaml(self, tmp_path: Path) -> None:
        path = tmp_path / "config.yaml"
        path.write_text("receiver_port: 9000\nreceiver_token_file: /t\n")
        settings = load_settings({"MODELCYCLE_CONFIG": str(path)})
        assert (settings.receiver_port, settings.receiver_token_file) == (9000, "/t")


class TestMonitoringSpec:
    def test_defaults_mirror_the_crd(self) -> None:
        monitoring = parse_spec(make_spec()).monitoring
        assert monitoring.cooldown_seconds == 300
        assert monitoring.alerts_enabled is True
        assert dict(monitoring.match_labels) == {}
        assert monitoring.schedule == ""
        b = monitoring.builtin
        assert (b.enabled, b.interval_seconds, b.min_accuracy, b.max_error) == (
            False,
            30,
            0.7,
            None,
        )
        assert (b.min_samples, b.drift_p_value, b.drift_fraction, b.retrain) == (
            20,
            0.05,
            0.5,
            True,
        )

    def test_given_values(self) -> None:
        monitoring = parse_spec(
            make_spec(
                monitoring={
                    "cooldownSeconds": 0,
                    "alerts": {"enabled": False, "matchLabels": {"severity": "critical"}},
                    "schedule": " 0  3 * * 1 ",
                    "builtin": {
                        "enabled": True,
                        "intervalSeconds": 5,
                        "minAccuracy": 0.9,
                        "maxError": 2,
                        "minSamples": 50,
                        "driftPValue": 0.01,
                        "driftFraction": 0.25,
                        "retrain": False,
                    },
                }
            )
        ).monitoring
        assert monitoring.cooldown_seconds == 0
        assert not monitoring.alerts_enabled
        assert dict(monitoring.match_labels) == {"severity": "critical"}
        assert monitoring.schedule == "0 3 * * 1"
        b = monitoring.builtin
        assert (b.enabled, b.interval_seconds, b.min_accuracy, b.max_error) == (True, 5, 0.9, 2.0)
        assert (b.min_samples, b.drift_p_value, b.drift_fraction, b.retrain) == (
            50,
            0.01,
            0.25,
            False,
        )

    @pytest.mark.parametrize(
        ("monitoring", "match"),
        [
            ({"cooldownSeconds": -1}, r"spec\.monitoring\.cooldownSeconds"),
            ({"cooldownSeconds": "5"}, r"spec\.monitoring\.cooldownSeconds"),
            ({"alerts": {"enabled": "yes"}}, r"spec\.monitoring\.alerts\.enabled"),
            ({"alerts": {"matchLabels": {"a": 1}}}, r"spec\.monitoring\.alerts\.matchLabels\.a"),
            ({"schedule": 5}, r"spec\.monitoring\.schedule"),
            ({"builtin": {"intervalSeconds": 1}}, r"spec\.monitoring\.builtin\.intervalSeconds"),
            ({"builtin": {"minAccuracy": 2}}, r"spec\.monitoring\.builtin\.minAccuracy"),
            ({"builtin": {"maxError": -1}}, r"spec\.monitoring\.builtin\.maxError"),
            ({"builtin": {"minSamples": 0}}, r"spec\.monitoring\.builtin\.minSamples"),
            ({"builtin": {"driftPValue": 1.5}}, r"spec\.monitoring\.builtin\.driftPValue"),
            ({"builtin": "on"}, r"spec\.monitoring\.builtin: expected an object"),
        ],
    )
    def test_errors_name_the_field(self, monitoring: dict[str, Any], match: str) -> None:
        with pytest.raises(SpecError, match=match):
            parse_spec(make_spec(monitoring=monitoring))
