"""Manifest builders: names, owner references, labels, securityContext, command lines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from modelcycle_fakes import UID, make_body, make_spec

from modelcycle_operator.pure import builders, naming
from modelcycle_operator.pure.spec import ModelCycle
from modelcycle_operator.settings import Settings

SETTINGS = Settings(allowed_estimator_modules=("sklearn", "xgboost"))
CHAMPION = {"cycle": 3, "version": "3-0123abcd", "image": "ghcr.io/modelcycle/trainer:0.0.9"}


def mc(**spec: Any) -> ModelCycle:
    return ModelCycle.from_body(make_body(spec=make_spec(**spec)))


def all_children(model: ModelCycle) -> dict[str, dict[str, Any]]:
    return {
        "pvc": builders.artifacts_pvc(model, SETTINGS),
        "train": builders.train_job(model, 2, SETTINGS),
        "eval": builders.eval_job(model, 2, SETTINGS),
        "deployment": builders.serving_deployment(model, CHAMPION, SETTINGS),
        "service": builders.serving_service(model, SETTINGS),
    }


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(manifest)
    return [*spec.get("initContainers", []), *spec["containers"]]


def arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


CHILDREN = ["pvc", "train", "eval", "deployment", "service"]
WORKLOADS = ["train", "eval", "deployment"]


class TestCommon:
    @pytest.mark.parametrize(
        ("which", "kind", "name"),
        [
            ("pvc", "PersistentVolumeClaim", "iris-artifacts"),
            ("train", "Job", "iris-train-2"),
            ("eval", "Job", "iris-eval-2"),
            ("deployment", "Deployment", "iris-serving"),
            ("service", "Service", "iris-serving"),
        ],
    )
    def test_deterministic_names(self, which: str, kind: str, name: str) -> None:
        manifest = all_children(mc())[which]
        assert manifest["kind"] == kind
        assert manifest["metadata"]["name"] == name
        assert manifest["metadata"]["namespace"] == "ml"

    @pytest.mark.parametrize("which", CHILDREN)
    def test_owner_reference(self, which: str) -> None:
        (ref,) = all_children(mc())[which]["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "modelcycle.dev/v1alpha1",
            "kind": "ModelCycle",
            "name": "iris",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @pytest.mark.parametrize(
        ("which", "step", "cycle"),
        [
            ("train", "train", "2"),
            ("eval", "evaluate", "2"),
            ("deployment", "serving", None),
            ("service", "serving", None),
        ],
    )
    def test_labels(self, which: str, step: str, cycle: str | None) -> None:
        labels = all_children(mc())[which]["metadata"]["labels"]
        assert labels[naming.LABEL_MANAGED_BY] == "modelcycle-operator"
        assert labels[naming.LABEL_PART_OF] == "modelcycle"
        assert labels[naming.LABEL_NAME] == "iris"
        assert labels[naming.LABEL_STEP] == step
        assert labels.get(naming.LABEL_CYCLE) == cycle

    @pytest.mark.parametrize("which", WORKLOADS)
    def test_pod_labels_route_events_to_parent(self, which: str) -> None:
        manifest = all_children(mc())[which]
        labels = manifest["spec"]["template"]["metadata"]["labels"]
        assert labels[naming.LABEL_MANAGED_BY] == "modelcycle-operator"
        assert labels[naming.LABEL_NAME] == "iris"

    @pytest.mark.parametrize("which", WORKLOADS)
    def test_restricted_pod_security(self, which: str) -> None:
        manifest = all_children(mc())[which]
        pod = pod_spec(manifest)["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 1000
        assert pod["runAsGroup"] == 1000
        assert pod["fsGroup"] == 1000
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(manifest):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["runAsNonRoot"] is True

    @pytest.mark.parametrize("which", WORKLOADS)
    def test_volumes_and_mounts(self, which: str) -> None:
        manifest = all_children(mc())[which]
        volumes = {v["name"]: v for v in pod_spec(manifest)["volumes"]}
        assert volumes["artifacts"]["persistentVolumeClaim"] == {"claimName": "iris-artifacts"}
        assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
        for container in containers(manifest):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts == {"/artifacts": "artifacts", "/tmp": "tmp"}

    @pytest.mark.parametrize("which", WORKLOADS)
    def test_env_and_termination_policy(self, which: str) -> None:
        for container in containers(all_children(mc())[which]):
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["MODELCYCLE_ALLOWED_MODULES"] == "sklearn,xgboost"
            assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
            assert container["command"][0] == "modelcycle-trainer"
            assert arg(container["command"], "--artifacts") == "/artifacts"

    @pytest.mark.parametrize("which", WORKLOADS)
    def test_no_service_account_token(self, which: str) -> None:
        assert pod_spec(all_children(mc())[which])["automountServiceAccountToken"] is False

    def test_builders_are_pure(self) -> None:
        model = mc()
        assert all_children(model) == all_children(model)


class TestArtifactsPvc:
    @pytest.mark.parametrize(
        ("artifacts", "expected"),
        [
            ({}, {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
            (
                {"size": "5Gi", "storageClassName": "fast"},
                {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "5Gi"}},
                    "storageClassName": "fast",
                },
            ),
        ],
    )
    def test_spec(self, artifacts: dict[str, str], expected: dict[str, Any]) -> None:
        assert builders.artifacts_pvc(mc(artifacts=artifacts), SETTINGS)["spec"] == expected

    def test_existing_claim_is_mounted(self) -> None:
        job = builders.train_job(mc(artifacts={"existingClaim": "shared"}), 1, SETTINGS)
        claim = pod_spec(job)["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim == "shared"


class TestTrainJob:
    def test_shape(self) -> None:
        job = builders.train_job(
            mc(training={"backoffLimit": 3, "activeDeadlineSeconds": 600}), 2, SETTINGS
        )
        assert job["apiVersion"] == "batch/v1"
        assert job["spec"]["backoffLimit"] == 3
        assert job["spec"]["activeDeadlineSeconds"] == 600
        spec = pod_spec(job)
        assert spec["restartPolicy"] == "Never"
        assert "initContainers" not in spec  # one container, one process
        assert [c["name"] for c in spec["containers"]] == ["train"]

    def test_train_collects_the_specs_data(self) -> None:
        model = mc(data={"testFraction": 0.3})
        (train,) = pod_spec(builders.train_job(model, 4, SETTINGS))["containers"]
        command = train["command"]
        assert command[:2] == ["modelcycle-trainer", "train"]
        assert arg(command, "--cycle") == "4"
        data = json.loads(arg(command, "--data"))
        assert data == {
            "builtin": {"name": "iris"},
            "target": "target",
            "task": "auto",
            "testFraction": 0.3,
            "seed": 42,
            "includeFeedback": True,
        }

    def test_train_command(self) -> None:
        model = mc(
            training={"parameters": {"C": 0.5, "max_iter": 200}, "preprocessing": "standard"}
        )
        (train,) = pod_spec(builders.train_job(model, 4, SETTINGS))["containers"]
        command = train["command"]
        assert command[:2] == ["modelcycle-trainer", "train"]
        assert arg(command, "--cycle") == "4"
        assert arg(command, "--allowed-modules") == "sklearn,xgboost"
        training = json.loads(arg(command, "--training"))
        assert training["estimator"] == "sklearn.linear_model.LogisticRegression"
        assert training["parameters"] == {"C": 0.5, "max_iter": 200}
        assert training["preprocessing"] == "standard"

    def test_train_evaluates_with_the_specs_evaluation(self) -> None:
        model = mc(evaluation={"metric": "f1_macro", "threshold": 0.7})
        (train,) = pod_spec(builders.train_job(model, 4, SETTINGS))["containers"]
        evaluation = json.loads(arg(train["command"], "--evaluation"))
        assert evaluation == model.spec.evaluation.to_dict()
        assert evaluation["metric"] == "f1_macro"
        assert evaluation["threshold"] == 0.7

    @pytest.mark.parametrize(
        ("image", "expected"),
        [("", "ghcr.io/modelcycle/trainer:0.1.0"), ("example.org/t:1", "example.org/t:1")],
    )
    def test_image(self, image: str, expected: str) -> None:
        job = builders.train_job(mc(training={"image": image}), 1, SETTINGS)
        assert {c["image"] for c in containers(job)} == {expected}

    def test_inputs_hash_annotation(self) -> None:
        model = mc()
        job = builders.train_job(model, 1, SETTINGS)
        annotations = job["metadata"]["annotations"]
        assert annotations[naming.ANNOTATION_INPUTS_HASH] == builders.inputs_hash(model, SETTINGS)

    @pytest.mark.parametrize(
        ("change", "same"),
        [
            ({"serving": {"replicas": 4}}, True),
            ({"monitoring": {"cooldownSeconds": 1}}, True),
            ({"suspend": True}, True),
            ({"training": {"parameters": {"C": 2}}}, False),
            ({"data": {"seed": 1}}, False),
            ({"evaluation": {"threshold": 0.5}}, False),
        ],
    )
    def test_inputs_hash_covers_training_inputs_only(
        self, change: dict[str, Any], same: bool
    ) -> None:
        before = builders.inputs_hash(mc(), SETTINGS)
        after = builders.inputs_hash(mc(**change), SETTINGS)
        assert (before == after) is same

    @pytest.mark.parametrize(
        ("own", "expected"),
        [
            ({}, {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}),
            (
                {"limits": {"memory": "128Mi"}},
                {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}},
            ),
            (
                {"requests": {"cpu": "2"}, "limits": {"cpu": "4"}},
                {
                    "requests": {"cpu": "2", "memory": "256Mi"},
                    "limits": {"memory": "2Gi", "cpu": "4"},
                },
            ),
        ],
    )
    def test_resources_default_per_resource(
        self, own: dict[str, dict[str, str]], expected: dict[str, Any]
    ) -> None:
        job = builders.train_job(mc(training={"resources": own}), 1, SETTINGS)
        for container in containers(job):
            assert container["resources"] == expected


class TestEvalJob:
    def test_command(self) -> None:
        model = mc(evaluation={"metric": "f1_macro", "threshold": 0.7, "compareWithChampion": True})
        job = builders.eval_job(model, 5, SETTINGS)
        (container,) = pod_spec(job)["containers"]
        assert container["name"] == "evaluate"
        assert "initContainers" not in pod_spec(job)
        assert container["command"][:2] == ["modelcycle-trainer", "evaluate"]
        assert arg(container["command"], "--cycle") == "5"
        assert json.loads(arg(container["command"], "--evaluation")) == {
            "metric": "f1_macro",
            "threshold": 0.7,
            "compareWithChampion": True,
            "minImprovement": 0.0,
        }
        assert arg(container["command"], "--allowed-modules") == "sklearn,xgboost"

    def test_image_override(self) -> None:
        job = builders.eval_job(mc(), 1, SETTINGS, image="example.org/pinned:1")
        assert pod_spec(job)["containers"][0]["image"] == "example.org/pinned:1"


class TestServingDeployment:
    def deployment(self, **spec: Any) -> dict[str, Any]:
        return builders.serving_deployment(mc(**spec), CHAMPION, SETTINGS)

    def test_rollout_strategy(self) -> None:
        spec = self.deployment(serving={"progressDeadlineSeconds": 60, "replicas": 2})["spec"]
        assert spec["replicas"] == 2
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        assert spec["progressDeadlineSeconds"] == 60
        assert spec["selector"] == {
            "matchLabels": {naming.LABEL_NAME: "iris", naming.LABEL_STEP: "serving"}
        }
        template_labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= template_labels.items()

    def test_probes_and_port(self) -> None:
        (container,) = pod_spec(self.deployment(serving={"port": 9000}))["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {
            "path": "/v2/health/ready",
            "port": "http",
        }
        assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}

    def test_readiness_is_probed_every_second_from_the_start(self) -> None:
        (container,) = pod_spec(self.deployment())["containers"]
        ready = container["readinessProbe"]
        assert ready["periodSeconds"] == 1
        assert ready.get("initialDelaySeconds", 0) == 0
        assert ready["failureThreshold"] >= 3, "one slow answer under load does not flap it"
        live = container["livenessProbe"]
        assert live["initialDelaySeconds"] >= 10, "a slow start is not killed"
        assert live["periodSeconds"] >= 5
        assert live["failureThreshold"] * live["periodSeconds"] >= 20

    def test_serve_command(self) -> None:
        (container,) = pod_spec(self.deployment(serving={"port": 9000}))["containers"]
        command = container["command"]
        assert command[:2] == ["modelcycle-trainer", "serve"]
        assert arg(command, "--model-dir") == "/artifacts/cycles/3/model"
        assert arg(command, "--name") == "iris"
        assert arg(command, "--version") == "3-0123abcd"
        assert arg(command, "--port") == "9000"
        assert arg(command, "--allowed-modules") == "sklearn,xgboost"

    @pytest.mark.parametrize(
        ("builtin", "p_value", "fraction"),
        [
            ({}, "0.05", "0.5"),
            ({"driftPValue": 0.01, "driftFraction": 0.25}, "0.01", "0.25"),
            ({"driftPValue": 0, "driftFraction": 1}, "1e-09", "1.0"),
        ],
    )
    def test_drift_thresholds_reach_the_server(
        self, builtin: dict[str, Any], p_value: str, fraction: str
    ) -> None:
        deployment = self.deployment(monitoring={"builtin": builtin})
        (container,) = pod_spec(deployment)["containers"]
        assert arg(container["command"], "--drift-p-value") == p_value
        assert arg(container["command"], "--drift-fraction") == fraction

    def test_monitor_switch_does_not_restart_the_pods(self) -> None:
        off = self.deployment(monitoring={"builtin": {"enabled": False}})
        on = self.deployment(monitoring={"builtin": {"enabled": True, "minAccuracy": 0.9}})
        assert off == on

    def test_version_annotation(self) -> None:
        deployment = self.deployment()
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations[naming.ANNOTATION_MODEL_VERSION] == "3-0123abcd"
        assert deployment["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH]

    @pytest.mark.parametrize(
        ("serving_image", "expected"),
        [("", "ghcr.io/modelcycle/trainer:0.0.9"), ("example.org/s:2", "example.org/s:2")],
    )
    def test_image_follows_model_unless_overridden(self, serving_image: str, expected: str) -> None:
        (container,) = pod_spec(self.deployment(serving={"image": serving_image}))["containers"]
        assert container["image"] == expected

    def test_replicas_override(self) -> None:
        deployment = builders.serving_deployment(mc(), CHAMPION, SETTINGS, replicas=0)
        assert deployment["spec"]["replicas"] == 0

    @pytest.mark.parametrize(
        ("change", "same"),
        [
            ({}, True),
            ({"serving": {"replicas": 3}}, False),
            ({"training": {"parameters": {"C": 3}}}, True),
        ],
    )
    def test_applied_hash_tracks_the_manifest(self, change: dict[str, Any], same: bool) -> None:
        def digest(d: dict[str, Any]) -> str:
            return str(d["metadata"]["annotations"][naming.ANNOTATION_APPLIED_HASH])

        assert (digest(self.deployment()) == digest(self.deployment(**change))) is same

    def test_hash_changes_with_model(self) -> None:
        first = builders.serving_deployment(mc(), CHAMPION, SETTINGS)
        second = builders.serving_deployment(mc(), {**CHAMPION, "version": "3-ffff"}, SETTINGS)
        key = naming.ANNOTATION_APPLIED_HASH
        assert first["metadata"]["annotations"][key] != second["metadata"]["annotations"][key]


class TestServingService:
    def test_shape(self) -> None:
        service = builders.serving_service(mc(serving={"port": 9000}), SETTINGS)
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"] == naming.serving_selector("iris")
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}
        ]

    def test_endpoint(self) -> None:
        assert builders.endpoint(mc(serving={"port": 9000})) == {
            "service": "iris-serving",
            "url": "http://iris-serving.ml.svc:9000",
            "modelName": "iris",
        }
