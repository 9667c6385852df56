"""The decision walked through whole cycles of observed states, without a cluster."""

from __future__ import annotations

import copy
import datetime

import pytest
from modelcycle_fakes import (
    COLLECT_OK,
    SETTINGS,
    T0,
    World,
    eval_ok,
    kinds,
    make_body,
    make_pod,
    make_spec,
    names,
    running,
    terminated,
    train_evaluated,
    train_ok,
    waiting,
)

from modelcycle_operator.pure import naming
from modelcycle_operator.pure.conditions import ALL_TYPES
from modelcycle_operator.pure.decide import (
    HISTORY_LIMIT,
    ROLLOUT_GRACE_SECONDS,
    ApplyDeployment,
    ApplyService,
    CreateJob,
    CreatePvc,
    EmitEvent,
    decide,
)
from modelcycle_operator.pure.observed import Observed


def reasons(world: World, type_: str | None = None) -> list[str]:
    return [e.reason for e in world.events if type_ is None or e.type == type_]


def promoted_world(**spec: object) -> World:
    world = World(make_body(spec=make_spec(**spec)))
    world.reconcile()
    world.run_cycle()
    assert world.status["step"] == "Serving"
    return world


class TestFirstReconcile:
    def test_starts_cycle_one_with_pvc_and_train_job(self) -> None:
        world = World()
        decision = world.reconcile()
        assert names(decision.actions, CreatePvc) == ["iris-artifacts"]
        assert names(decision.actions, CreateJob) == ["iris-train-1"]
        assert [e.reason for e in kinds(decision.actions, EmitEvent)] == ["CycleStarted"]
        status = decision.status
        assert status["cycle"] == 1
        assert status["step"] == "Pending"
        assert status["observedGeneration"] == 1
        assert status["lastTrigger"]["type"] == "Created"
        assert status["triggers"]["handledGeneration"] == 1
        assert status["challenger"] == {"cycle": 1}

    def test_sets_every_condition(self) -> None:
        world = World()
        world.reconcile()
        types = [c["type"] for c in world.status["conditions"]]
        assert types == list(ALL_TYPES)
        assert world.condition("Ready")["status"] == "False"
        assert world.condition("Ready")["reason"] == "NoChampion"
        assert world.condition("Reconciling")["status"] == "True"
        assert world.condition("Stalled")["status"] == "False"
        assert world.condition("Trained")["status"] == "Unknown"
        assert world.condition("Degraded")["status"] == "Unknown"
        for c in world.status["conditions"]:
            assert c["observedGeneration"] == 1
            assert c["lastTransitionTime"] == "2026-12-01T12:00:01Z"

    def test_existing_claim_is_not_created(self) -> None:
        world = World(make_body(spec=make_spec(artifacts={"existingClaim": "shared"})))
        decision = world.reconcile()
        assert kinds(decision.actions, CreatePvc) == []
        job = world.get("Job", "iris-train-1")
        assert job is not None
        volumes = job["spec"]["template"]["spec"]["volumes"]
        assert volumes[0]["persistentVolumeClaim"]["claimName"] == "shared"

    def test_same_inputs_same_decision(self) -> None:
        body = make_body()
        first = decide(copy.deepcopy(body), Observed(), T0, SETTINGS)
        second = decide(copy.deepcopy(body), Observed(), T0, SETTINGS)
        assert first == second

    def test_deleting_object_gets_no_actions(self) -> None:
        body = make_body()
        body["metadata"]["deletionTimestamp"] = "2026-12-01T12:00:00Z"
        decision = decide(body, Observed(), T0, SETTINGS)
        assert decision.actions == ()


class TestIdempotence:
    def test_second_pass_creates_nothing(self) -> None:
        world = World()
        world.reconcile()
        again = world.reconcile()
        assert kinds(again.actions, CreateJob) == []
        assert kinds(again.actions, CreatePvc) == []
        assert kinds(again.actions, EmitEvent) == []

    @pytest.mark.parametrize(
        "stage", ["training", "legacy-collecting", "legacy-training", "evaluating", "rolling"]
    )
    def test_repeating_an_observation_repeats_nothing(self, stage: str) -> None:
        world = World()
        world.reconcile()
        if stage == "training":
            world.train_running()
        elif stage == "legacy-collecting":
            world.collect_running()
        elif stage == "legacy-training":
            world.collect_done()
        elif stage == "evaluating":
            world.train_done()
            world.reconcile()
        else:
            world.train_done()
            world.reconcile()
            world.rollout_progressing()
        world.reconcile()
        status = copy.deepcopy(world.status)
        again = world.reconcile()
        assert [a for a in again.actions if not isinstance(a, ApplyService)] == []
        assert kinds(again.actions, ApplyService) == []
        assert again.status == status

    def test_whole_cycle_creates_each_job_once(self) -> None:
        world = World()
        world.reconcile()
        world.run_cycle()
        world.reconcile()
        world.reconcile()
        assert world.creates.count("Job/iris-train-1") == 1
        assert "Job/iris-eval-1" not in world.creates, "train reported the metrics"
        assert world.applies.count("Deployment/iris-serving") == 1
        assert world.applies.count("Service/iris-serving") == 1

    def test_status_written_but_job_missing_is_recreated(self) -> None:
        # The operator wrote "cycle 1 started" and died before creating the Job.
        world = World()
        world.reconcile()
        del world.objects[("Job", "iris-train-1")]
        decision = world.reconcile()
        assert names(decision.actions, CreateJob) == ["iris-train-1"]
        assert world.status["cycle"] == 1


class TestHappyPath:
    def test_walks_every_step_to_serving(self) -> None:
        world = World()
        world.reconcile()
        assert world.status["step"] == "Pending"

        world.train_running()  # one container: it collects, then fits
        world.reconcile()
        assert world.status["step"] == "Training"
        detail = world.condition("Reconciling")["message"]
        assert "collecting builtin dataset iris, then training" in detail, detail
        assert world.condition("DataCollected")["status"] == "Unknown"

        world.train_done()  # train collected, fitted and evaluated in its own process
        decision = world.reconcile()
        collected = world.condition("DataCollected")
        assert collected["status"] == "True"
        assert "150 rows" in collected["message"]
        assert COLLECT_OK["dataHash"] in collected["message"]
        assert world.status["challenger"]["dataHash"] == COLLECT_OK["dataHash"]
        assert "DataCollected" in reasons(world, "Normal")
        assert names(decision.actions, CreateJob) == [], "no evaluation Job"
        assert world.condition("Trained")["status"] == "True"
        assert world.status["challenger"]["version"] == "1-deadbeef"
        assert world.status["challenger"]["artifactPath"] == "pvc://iris-artifacts/cycles/1/model"
        assert world.status["step"] == "RollingOut"
        assert world.condition("Evaluated")["status"] == "True"
        assert world.condition("Gated")["status"] == "True"
        assert world.condition("Gated")["reason"] == "ThresholdMet"
        assert world.condition("RolledOut")["status"] == "Unknown"
        assert world.status["challenger"]["metrics"]["accuracy"] == 0.97
        assert world.status["challenger"]["score"] == 0.97
        (apply,) = kinds(decision.actions, ApplyDeployment)
        template = apply.manifest["spec"]["template"]["metadata"]
        assert template["annotations"][naming.ANNOTATION_MODEL_VERSION] == "1-deadbeef"
        assert names(decision.actions, ApplyService) == ["iris-serving"]
        assert world.condition("Ready")["status"] == "False"

        world.rollout_progressing()
        world.reconcile()
        assert world.status["step"] == "RollingOut"
        assert "1/1 updated" in world.condition("Reconciling")["message"]

        world.rollout_available()
        world.reconcile()
        status = world.status
        assert status["step"] == "Serving"
        assert status["champion"]["version"] == "1-deadbeef"
        assert status["champion"]["metrics"]["accuracy"] == 0.97
        assert status["champion"]["image"] == SETTINGS.image
        assert status["champion"]["cycle"] == 1
        assert status["challenger"]["verdict"] == "Promoted"
        assert status["endpoint"] == {
            "service": "iris-serving",
            "url": "http://iris-serving.ml.svc:8080",
            "modelName": "iris",
        }
        (entry,) = status["history"]
        assert entry["verdict"] == "Promoted"
        assert entry["cycle"] == 1
        assert entry["trigger"] == "Created"
        assert entry["score"] == 0.97
        assert entry["dataHash"] == COLLECT_OK["dataHash"]
        assert world.condition("RolledOut")["status"] == "True"
        assert world.condition("Ready")["status"] == "True"
        assert world.condition("Ready")["reason"] == "ChampionServing"
        assert world.condition("Reconciling")["status"] == "False"
        assert world.condition("Stalled")["status"] == "False"
        assert reasons(world) == [
            "CycleStarted",
            "DataCollected",
            "Trained",
            "Evaluated",
            "RolloutStarted",
            "Promoted",
        ]
        world.settle()

    def test_old_generation_is_not_rolled_out(self) -> None:
        world = World()
        world.reconcile()
        world.train_done()
        world.reconcile()
        world.rollout_available()
        world.deployment()["status"]["observedGeneration"] = 0
        world.reconcile()
        assert world.status["step"] == "RollingOut"

    def test_old_replicas_still_running_is_not_rolled_out(self) -> None:
        world = World()
        world.reconcile()
        world.train_done()
        world.reconcile()
        world.rollout_available()
        world.deployment()["status"]["replicas"] = 2
        world.reconcile()
        assert world.status["step"] == "RollingOut"

    def test_serving_disabled_promotes_without_deployment(self) -> None:
        world = World(make_body(spec=make_spec(serving={"enabled": False})))
        world.reconcile()
        world.run_cycle()
        assert world.status["step"] == "Serving"
        assert world.status["champion"]["version"] == "1-deadbeef"
        assert world.get("Deployment", "iris-serving") is None
        assert world.condition("Ready")["reason"] == "ChampionPromoted"
        assert "endpoint" not in world.status


class TestEvaluationInTrain:
    """train --evaluation reports the metrics; an older image's train does not."""

    def test_an_older_train_without_metrics_gets_an_evaluation_job(self) -> None:
        world = World()
        world.reconcile()
        world.train_done(train_ok(1))
        decision = world.reconcile()
        assert world.status["step"] == "Evaluating"
        assert names(decision.actions, CreateJob) == ["iris-eval-1"]
        (job,) = kinds(decision.actions, CreateJob)
        command = job.manifest["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[1] == "evaluate"
        assert world.condition("Evaluated")["status"] == "Unknown"

        world.eval_done()
        decision = world.reconcile()
        assert world.status["step"] == "RollingOut"
        assert world.condition("Evaluated")["status"] == "True"
        assert world.condition("Gated")["reason"] == "ThresholdMet"
        assert world.status["challenger"]["metrics"] == eval_ok()["metrics"]
        assert world.status["challenger"]["score"] == 0.97
        world.rollout_available()
        world.reconcile()
        assert world.status["step"] == "Serving"
        assert world.creates.count("Job/iris-eval-1") == 1
        assert reasons(world) == [
            "CycleStarted",
            "DataCollected",
            "Trained",
            "Evaluated",
            "RolloutStarted",
            "Promoted",
        ]

    @pytest.mark.parametrize("eval_job", [False, True])
    def test_both_paths_record_the_same_evaluation(self, eval_job: bool) -> None:
        world = World()
        world.reconcile()
        world.run_cycle(accuracy=0.91, eval_job=eval_job)
        status = world.status
        assert status["step"] == "Serving"
        assert status["champion"]["metrics"] == {"accuracy": 0.91, "f1_macro": 0.9}
        assert status["champion"]["score"] == 0.91
        evaluated = world.condition("Evaluated")
        assert evaluated["reason"] == "Evaluated"
        assert evaluated["message"] == (
            "Model version 1-deadbeef scored accuracy 0.91, f1_macro 0.9 on the held-out split"
        )
        assert ("Job/iris-eval-1" in world.creates) is eval_job

    def test_metrics_from_train_below_threshold_reject_in_the_same_pass(self) -> None:
        world = World(make_body(spec=make_spec(evaluation={"threshold": 0.99})))
        world.reconcile()
        world.train_done(train_evaluated(1, accuracy=0.9))
        decision = world.reconcile()
        assert world.status["step"] == "Rejected"
        assert kinds(decision.actions, CreateJob) == []
        assert kinds(decision.actions, ApplyDeployment) == []
        assert world.condition("Gated")["status"] == "False"
        assert world.status["challenger"]["verdict"] == "Rejected"
        assert world.get("Job", "iris-eval-1") is None

    def test_empty_metrics_from_train_fall_back_to_the_evaluation_job(self) -> None:
        world = World()
        world.reconcile()
        world.train_done({**train_ok(1), "metrics": {}, "task": "classification"})
        decision = world.reconcile()
        assert names(decision.actions, CreateJob) == ["iris-eval-1"]

    def test_train_job_asks_train_to_evaluate(self) -> None:
        world = World(make_body(spec=make_spec(evaluation={"metric": "f1_macro"})))
        world.reconcile()
        job = world.objects[("Job", "iris-train-1")]
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        evaluation = command[command.index("--evaluation") + 1]
        assert '"metric":"f1_macro"' in evaluation


class TestRejection:
    def test_below_threshold_is_rejected_and_nothing_serves(self) -> None:
        world = World(make_body(spec=make_spec(evaluation={"threshold": 0.99})))
        world.reconcile()
        world.run_cycle(accuracy=0.5)
        status = world.status
        assert status["step"] == "Rejected"
        assert world.condition("Gated")["status"] == "False"
        assert world.condition("Gated")["reason"] == "BelowThreshold"
        assert "0.5" in world.condition("Gated")["message"]
        assert world.get("Deployment", "iris-serving") is None
        assert status["history"][-1]["verdict"] == "Rejected"
        assert status["history"][-1]["reason"] == "BelowThreshold"
        assert status["challenger"]["verdict"] == "Rejected"
        assert "champion" not in status
        ready = world.condition("Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ChallengerRejected")
        assert world.condition("Stalled")["status"] == "False"
        assert world.condition("Reconciling")["status"] == "False"
        world.settle()

    def test_rejected_challenger_leaves_champion_serving(self) -> None:
        world = promoted_world()
        world.edit_spec(evaluation={"threshold": 0.99})
        world.reconcile()
        assert world.status["cycle"] == 2
        world.run_cycle(accuracy=0.9)
        assert world.status["step"] == "Rejected"
        assert world.status["champion"]["version"] == "1-deadbeef"
        dep = world.deployment()
        version = dep["spec"]["template"]["metadata"]["annotations"][
            naming.ANNOTATION_MODEL_VERSION
        ]
        assert version == "1-deadbeef"
        assert world.condition("Ready")["status"] == "True"

    def test_worse_than_champion_is_rejected(self) -> None:
        world = promoted_world(evaluation={"compareWithChampion": True, "minImprovement": 0.01})
        world.annotate(naming.ANNOTATION_RETRAIN, "again")
        world.reconcile()
        world.run_cycle(accuracy=0.975)
        assert world.condition("Gated")["reason"] == "WorseThanChampion"
        assert world.status["champion"]["cycle"] == 1

    def test_better_than_champion_replaces_it(self) -> None:
        world = promoted_world(evaluation={"compareWithChampion": True, "minImprovement": 0.01})
        world.annotate(naming.ANNOTATION_RETRAIN, "again")
        world.reconcile()
        world.run_cycle(accuracy=0.99)
        assert world.status["step"] == "Serving"
        assert world.status["champion"]["version"] == "2-deadbeef"
        assert [h["verdict"] for h in world.status["history"]] == ["Promoted", "Promoted"]


class TestFailures:
    @pytest.mark.parametrize(
        ("container", "error", "reason", "condition"),
        [
            (
                "train",
                "estimator module 'os' is not allowed (allowed: sklearn)",
                "TrainingFailed",
                "Trained",
            ),
            (
                "collect",
                "cannot fetch http://127.0.0.1:9/x.csv: Connection refused",
                "DataCollectionFailed",
                "DataCollected",
            ),
        ],
    )
    @pytest.mark.parametrize("legacy", [False, True], ids=["one-container", "two-containers"])
    def test_job_failure_stalls_with_the_workload_message(
        self, container: str, error: str, reason: str, condition: str, legacy: bool
    ) -> None:
        world = World()
        world.reconcile()
        world.train_failed(container, error, legacy=legacy)
        world.reconcile()
        status = world.status
        assert status["step"] == "Failed"
        stalled = world.condition("Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", reason)
        assert error in stalled["message"]
        assert world.condition(condition)["status"] == "False"
        assert error in world.condition(condition)["message"]
        ready = world.condition("Ready")
        assert (ready["status"], ready["reason"]) == ("False", reason)
        assert world.condition("Reconciling")["status"] == "False"
        assert status["history"][-1]["verdict"] == "Failed"
        assert status["history"][-1]["reason"] == reason
        assert reason in reasons(world, "Warning")

    def test_failed_cycle_is_not_retried(self) -> None:
        world = World()
        world.reconcile()
        world.train_failed("train", "boom")
        world.reconcile()
        creates = list(world.creates)
        for _ in range(5):
            decision = world.reconcile(advance=600)
            assert kinds(decision.actions, CreateJob) == []
            assert kinds(decision.actions, EmitEvent) == []
        assert world.creates == creates
        assert world.status["cycle"] == 1
        assert world.condition("Stalled")["status"] == "True"

    def test_failure_without_termination_message_uses_job_condition(self) -> None:
        world = World()
        world.reconcile()
        world.set_job(
            "train",
            pods=[],
            condition=(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
        )
        world.reconcile()
        stalled = world.condition("Stalled")
        assert stalled["reason"] == "DataCollectionFailed"
        assert "DeadlineExceeded" in stalled["message"]

    def test_log_tail_is_used_when_no_json_message(self) -> None:
        world = World()
        world.reconcile()
        world.set_job(
            "train",
            pods=[
                make_pod(
                    "p",
                    phase="Failed",
                    init=[terminated("collect", 0, COLLECT_OK)],
                    containers=[terminated("train", 137, "loading...\nKilled: out of memory\n")],
                )
            ],
            condition=(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        )
        world.reconcile()
        message = world.condition("Stalled")["message"]
        assert "Killed: out of memory" in message
        assert "137" in message

    def test_killed_after_collecting_is_a_training_failure(self) -> None:
        # train --data writes {"stage": "train", "collected": ...} to its termination log
        # as soon as it has collected; the OOM killer then leaves that message behind.
        world = World()
        world.reconcile()
        progress = {"stage": "train", "collected": COLLECT_OK}
        world.set_job(
            "train",
            pods=[
                make_pod(
                    "p",
                    phase="Failed",
                    containers=[terminated("train", 137, progress, reason="OOMKilled")],
                )
            ],
            condition=("Failed", "BackoffLimitExceeded", "backoff"),
        )
        world.reconcile()
        stalled = world.condition("Stalled")
        assert stalled["reason"] == "TrainingFailed"
        assert "out of memory (OOMKilled)" in stalled["message"]
        collected = world.condition("DataCollected")
        assert collected["status"] == "True"
        assert "150 rows" in collected["message"]
        assert world.status["challenger"]["dataHash"] == COLLECT_OK["dataHash"]

    def test_killed_before_collecting_is_a_collection_failure(self) -> None:
        # No JSON at all (the log tail instead): the process ended before it had collected.
        world = World()
        world.reconcile()
        world.set_job(
            "train",
            pods=[
                make_pod(
                    "p",
                    phase="Failed",
                    containers=[terminated("train", 137, "fetching...\nKilled\n")],
                )
            ],
            condition=("Failed", "BackoffLimitExceeded", "backoff"),
        )
        world.reconcile()
        stalled = world.condition("Stalled")
        assert stalled["reason"] == "DataCollectionFailed"
        assert "Data collection from builtin dataset iris failed: Killed" in stalled["message"]
        assert world.condition("DataCollected")["status"] == "False"

    def test_refused_before_collecting_is_a_training_failure(self) -> None:
        world = World()
        world.reconcile()
        error = "estimator os.system refused: package 'os' is not in the allowed modules"
        world.set_job(
            "train",
            pods=[
                make_pod(
                    "p",
                    phase="Failed",
                    containers=[terminated("train", 1, {"error": error, "stage": "train"})],
                )
            ],
            condition=("Failed", "BackoffLimitExceeded", "backoff"),
        )
        world.reconcile()
        stalled = world.condition("Stalled")
        assert stalled["reason"] == "TrainingFailed"
        assert error in stalled["message"]
        assert world.condition("DataCollected")["status"] == "Unknown"

    def test_an_image_without_train_data_says_so(self) -> None:
        world = World()
        world.reconcile()
        error = "usage: unrecognized arguments: --data {} (see modelcycle-trainer train --help)"
        world.set_job(
            "train",
            pods=[
                make_pod("p", phase="Failed", containers=[terminated("train", 2, {"error": error})])
            ],
            condition=("Failed", "BackoffLimitExceeded", "backoff"),
        )
        world.reconcile()
        stalled = world.condition("Stalled")
        assert stalled["reason"] == "TrainingFailed"
        assert error in stalled["message"]
        assert f"the image {SETTINGS.image} predates the one-container" in stalled["message"]

    def test_training_success_without_version_fails(self) -> None:
        world = World()
        world.reconcile()
        world.train_done(version_message="not json")
        world.reconcile()
        assert world.condition("Stalled")["reason"] == "TrainingFailed"
        assert "not json" in world.condition("Stalled")["message"]

    @pytest.mark.parametrize("message", [{"error": "model file is corrupt"}, {"metrics": {}}])
    def test_evaluation_failure(self, message: dict[str, object]) -> None:
        world = World()
        world.reconcile()
        world.train_done(train_ok(1))  # an older image: the evaluation Job runs
        world.reconcile()
        if "error" in message:
            world.set_job(
                "eval",
                pods=[
                    make_pod("e", phase="Failed", containers=[terminated("evaluate", 1, message)])
                ],
                condition=("Failed", "BackoffLimitExceeded", "backoff"),
            )
        else:
            world.eval_done(message)
        world.reconcile()
        assert world.condition("Stalled")["reason"] == "EvaluationFailed"
        assert world.condition("Evaluated")["status"] == "False"

    def test_failed_cycle_keeps_champion_ready(self) -> None:
        world = promoted_world()
        world.annotate(naming.ANNOTATION_RETRAIN, "1")
        world.reconcile()
        world.train_failed("train", "boom")
        world.reconcile()
        assert world.condition("Stalled")["status"] == "True"
        assert world.condition("Ready")["status"] == "True"
        assert world.status["champion"]["cycle"] == 1

    def test_new_trigger_after_failure_starts_next_cycle(self) -> None:
        world = World()
        world.reconcile()
        world.train_failed("train", "bad estimator")
        world.reconcile()
        world.edit_spec(training={"estimator": "sklearn.tree.DecisionTreeClassifier"})
        decision = world.reconcile()
        assert world.status["cycle"] == 2
        assert world.status["lastTrigger"]["type"] == "SpecChanged"
        assert names(decision.actions, CreateJob) == ["iris-train-2"]
        assert world.condition("Stalled")["status"] == "False"


class TestOlderOperatorsJob:
    """A training Job an older operator created (initContainer collect, container train)
    may still run when this operator takes over: it is read as before."""

    def test_walks_to_serving(self) -> None:
        world = World()
        world.reconcile()
        world.collect_running()
        world.reconcile()
        assert world.status["step"] == "Collecting"
        assert "collecting builtin dataset iris" in world.condition("Reconciling")["message"]

        world.collect_done()
        world.reconcile()
        assert world.status["step"] == "Training"
        collected = world.condition("DataCollected")
        assert collected["status"] == "True"
        assert "150 rows" in collected["message"]
        assert world.status["challenger"]["dataHash"] == COLLECT_OK["dataHash"]

        world.train_done(legacy=True)
        world.reconcile()
        assert world.condition("Trained")["status"] == "True"
        assert world.status["step"] == "RollingOut"
        world.rollout_available()
        world.reconcile()
        assert world.status["step"] == "Serving"
        assert world.status["champion"]["dataHash"] == COLLECT_OK["dataHash"]

    def test_train_killed_without_message_is_a_training_failure(self) -> None:
        world = World()
        world.reconcile()
        world.set_job(
            "train",
            pods=[
                make_pod(
                    "p",
                    phase="Failed",
                    init=[terminated("collect", 0, COLLECT_OK)],
                    containers=[terminated("train", 137, "", reason="OOMKilled")],
                )
            ],
            condition=("Failed", "BackoffLimitExceeded", "backoff"),
        )
        world.reconcile()
        assert world.condition("Stalled")["reason"] == "TrainingFailed"
        assert world.condition("DataCollected")["status"] == "True"


class TestRollout:
    def rolling_world(self, **spec: object) -> World:
        world = promoted_world(**spec)
        world.annotate(naming.ANNOTATION_RETRAIN, "v2")
        world.reconcile()
        world.train_done()
        world.reconcile()
        assert world.status["step"] == "RollingOut"
        return world

    def test_deadline_exceeded_restores_champion(self) -> None:
        world = self.rolling_world()
        world.rollout_deadline_exceeded()
        decision = world.reconcile()
        (apply,) = kinds(decision.actions, ApplyDeployment)
        annotations = apply.manifest["spec"]["template"]["metadata"]["annotations"]
        assert annotations[naming.ANNOTATION_MODEL_VERSION] == "1-deadbeef"
        rolled = world.condition("RolledOut")
        assert (rolled["status"], rolled["reason"]) == ("False", "RolloutFailed")
        assert "progress deadline" in rolled["message"]
        assert "restored the champion" in rolled["message"]
        assert world.status["history"][-1]["verdict"] == "RolledBack"
        assert world.status["challenger"]["verdict"] == "RolledBack"
        assert world.status["champion"]["version"] == "1-deadbeef"
        assert world.status["step"] == "Failed"
        assert world.condition("Stalled")["reason"] == "RolloutFailed"
        assert world.condition("Ready")["status"] == "True"
        assert "RolloutFailed" in reasons(world, "Warning")
        world.settle()

    def test_without_champion_scales_to_zero(self) -> None:
        world = World()
        world.reconcile()
        world.train_done()
        world.reconcile()
        world.rollout_deadline_exceeded()
        decision = world.reconcile()
        (apply,) = kinds(decision.actions, ApplyDeployment)
        assert apply.manifest["spec"]["replicas"] == 0
        assert world.condition("Ready")["status"] == "False"
        assert world.condition("Ready")["reason"] == "RolloutFailed"

    def test_no_rollback_when_disabled(self) -> None:
        world = self.rolling_world(serving={"rollbackOnFailure": False})
        world.rollout_deadline_exceeded()
        decision = world.reconcile()
        assert kinds(decision.actions, ApplyDeployment) == []
        assert world.status["history"][-1]["verdict"] == "Failed"
        again = world.reconcile()
        assert kinds(again.actions, ApplyDeployment) == []

    def test_crash_looping_past_deadline_fails(self) -> None:
        world = self.rolling_world()
        world.rollout_progressing()
        world.serving_pods = [
            make_pod(
                "iris-serving-x",
                containers=[
                    {
                        **waiting("serve", "CrashLoopBackOff", "back-off 10s", restarts=3),
                        "lastState": {
                            "terminated": {"exitCode": 1, "message": '{"error": "no model.skops"}'}
                        },
                    }
                ],
                annotations={naming.ANNOTATION_MODEL_VERSION: "2-deadbeef"},
            )
        ]
        world.reconcile(advance=30)
        assert world.status["step"] == "RollingOut"
        assert "no model.skops" in world.condition("Reconciling")["message"]
        world.reconcile(advance=200)
        assert world.status["step"] == "Failed"
        assert "no model.skops" in world.condition("RolledOut")["message"]

    def test_clock_fallback_when_controller_never_reports(self) -> None:
        world = self.rolling_world()
        world.rollout_progressing()
        world.reconcile(advance=181)
        assert world.status["step"] == "RollingOut"
        world.reconcile(advance=ROLLOUT_GRACE_SECONDS)
        assert world.status["step"] == "Failed"
        assert "did not become available" in world.condition("RolledOut")["message"]

    def test_stale_deadline_of_previous_rollout_is_ignored(self) -> None:
        world = self.rolling_world()
        dep = world.deployment()
        world.rollout_deadline_exceeded()
        dep["status"]["observedGeneration"] = dep["metadata"]["generation"] - 1
        world.reconcile()
        assert world.status["step"] == "RollingOut"


class TestTriggers:
    def test_spec_change_starts_next_cycle(self) -> None:
        world = promoted_world()
        world.edit_spec(training={"parameters": {"C": 10}})
        decision = world.reconcile()
        assert world.status["cycle"] == 2
        trigger = world.status["lastTrigger"]
        assert (trigger["type"], trigger["generation"]) == ("SpecChanged", 2)
        assert names(decision.actions, CreateJob) == ["iris-train-2"]
        job = world.get("Job", "iris-train-2")
        assert job is not None
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        assert '"C":10' in command[command.index("--training") + 1]
        for type_ in ("DataCollected", "Trained", "Evaluated", "Gated", "RolledOut"):
            assert world.condition(type_)["status"] == "Unknown"
        assert world.condition("Ready")["status"] == "True"

    def test_spec_change_during_cycle_waits_for_it(self) -> None:
        world = World()
        world.reconcile()
        world.train_done()
        world.reconcile()
        world.edit_spec(training={"parameters": {"C": 10}})
        decision = world.reconcile()
        assert world.status["cycle"] == 1
        assert world.status["step"] == "RollingOut"
        assert kinds(decision.actions, CreateJob) == []
        world.rollout_available()
        world.reconcile()
        assert world.status["cycle"] == 2
        assert world.status["history"][-1]["verdict"] == "Promoted"
        assert world.status["lastTrigger"]["type"] == "SpecChanged"

    def test_serving_only_change_reapplies_without_retraining(self) -> None:
        world = promoted_world()
        world.edit_spec(serving={"replicas": 3})
        decision = world.reconcile()
        assert world.status["cycle"] == 1
        (apply,) = kinds(decision.actions, ApplyDeployment)
        assert apply.manifest["spec"]["replicas"] == 3
        assert world.status["triggers"]["handledGeneration"] == 2
        assert world.status["observedGeneration"] == 2

    @pytest.mark.parametrize(
        "change",
        [
            {"data": {"seed": 7}},
            {"evaluation": {"threshold": 0.9}},
            {"training": {"image": "ghcr.io/modelcycle/trainer:0.2.0"}},
        ],
    )
    def test_training_inputs_change_retrains(self, change: dict[str, object]) -> None:
        world = promoted_world()
        world.edit_spec(**change)
        world.reconcile()
        assert world.status["cycle"] == 2

    def test_monitoring_change_does_not_retrain(self) -> None:
        world = promoted_world()
        world.edit_spec(monitoring={"cooldownSeconds": 10})
        world.reconcile()
        assert world.status["cycle"] == 1

    def test_manual_annotation_starts_cycle_once(self) -> None:
        world = promoted_world()
        world.annotate(naming.ANNOTATION_RETRAIN, "2026-12-01T13:00")
        world.reconcile()
        assert world.status["cycle"] == 2
        trigger = world.status["lastTrigger"]
        assert (trigger["type"], trigger["value"]) == ("Manual", "2026-12-01T13:00")
        assert world.status["triggers"]["handledRetrain"] == "2026-12-01T13:00"
        world.run_cycle()
        world.reconcile()
        assert world.status["cycle"] == 2

    def test_annotation_present_at_creation_is_not_a_second_trigger(self) -> None:
        world = World(make_body(annotations={naming.ANNOTATION_RETRAIN: "x"}))
        world.reconcile()
        world.run_cycle()
        world.reconcile()
        assert world.status["cycle"] == 1

    def test_spec_change_and_annotation_make_one_cycle(self) -> None:
        world = promoted_world()
        world.annotate(naming.ANNOTATION_RETRAIN, "now")
        world.edit_spec(training={"parameters": {"C": 2}})
        world.reconcile()
        world.run_cycle()
        world.reconcile()
        assert world.status["cycle"] == 2

    def test_history_is_bounded_newest_last(self) -> None:
        world = promoted_world()
        for i in range(HISTORY_LIMIT + 3):
            world.annotate(naming.ANNOTATION_RETRAIN, str(i))
            world.reconcile()
            world.run_cycle()
        history = world.status["history"]
        assert len(history) == HISTORY_LIMIT
        assert history[-1]["cycle"] == HISTORY_LIMIT + 4
        assert [h["cycle"] for h in history] == sorted(h["cycle"] for h in history)


class TestSuspend:
    def test_suspended_at_creation_starts_nothing(self) -> None:
        world = World(make_body(spec=make_spec(suspend=True)))
        decision = world.reconcile()
        assert kinds(decision.actions, CreateJob) == []
        assert world.status["step"] == "Suspended"
        assert world.status["cycle"] == 0
        ready = world.condition("Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Suspended")
        world.edit_spec(suspend=False)
        decision = world.reconcile()
        assert names(decision.actions, CreateJob) == ["iris-train-1"]
        assert world.status["lastTrigger"]["type"] == "Created"

    def test_suspend_blocks_triggers_and_keeps_serving(self) -> None:
        world = promoted_world()
        world.edit_spec(suspend=True)
        world.reconcile()
        assert world.status["step"] == "Suspended"
        world.annotate(naming.ANNOTATION_RETRAIN, "please")
        decision = world.reconcile()
        assert kinds(decision.actions, CreateJob) == []
        assert world.condition("Ready")["status"] == "True"
        assert world.condition("Reconciling")["status"] == "False"
        world.edit_spec(suspend=False)
        world.reconcile()
        assert world.status["cycle"] == 2
        assert world.status["lastTrigger"]["type"] == "Manual"

    def test_unsuspend_without_trigger_restores_serving(self) -> None:
        world = promoted_world()
        world.edit_spec(suspend=True)
        world.reconcile()
        world.edit_spec(suspend=False)
        world.reconcile()
        assert world.status["step"] == "Serving"
        assert world.status["cycle"] == 1

    def test_suspend_lets_running_cycle_finish(self) -> None:
        world = World()
        world.reconcile()
        world.edit_spec(suspend=True)
        world.run_cycle()
        world.reconcile()
        assert world.status["champion"]["cycle"] == 1
        assert world.status["step"] == "Suspended"


class TestInvalidSpec:
    @pytest.mark.parametrize(
        ("spec", "path"),
        [
            (make_spec(evaluation={"metric": "accuracy", "threshold": None}), "threshold"),
            (make_spec(data={"url": {"url": "ftp://x/y.csv"}, "builtin": None}), "spec.data.url"),
            (make_spec(serving={"replicas": 99}), "spec.serving.replicas"),
        ],
    )
    def test_invalid_spec_stalls_without_actions(self, spec: dict[str, object], path: str) -> None:
        world = World(make_body(spec=spec))
        decision = world.reconcile()
        assert [a for a in decision.actions if not isinstance(a, EmitEvent)] == []
        stalled = world.condition("Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
        assert path in stalled["message"]
        assert world.status["step"] == "Failed"
        assert world.status["observedGeneration"] == 1
        assert reasons(world) == ["InvalidSpec"]
        world.reconcile()
        assert reasons(world) == ["InvalidSpec"]

    def test_fixing_the_spec_starts_the_cycle(self) -> None:
        world = World(make_body(spec=make_spec(serving={"replicas": 99})))
        world.reconcile()
        world.edit_spec(serving={"replicas": 1})
        decision = world.reconcile()
        assert names(decision.actions, CreateJob) == ["iris-train-1"]
        assert world.condition("Stalled")["status"] == "False"

    def test_invalid_edit_then_revert_resumes_serving(self) -> None:
        world = promoted_world()
        world.edit_spec(serving={"port": 80})
        world.reconcile()
        assert world.condition("Stalled")["reason"] == "InvalidSpec"
        world.edit_spec(serving={"port": 8080})
        world.reconcile()
        assert world.status["step"] == "Serving"
        assert world.status["cycle"] == 1
        assert world.condition("Stalled")["status"] == "False"

    def test_too_long_name(self) -> None:
        world = World(make_body(name="a" * 50))
        world.reconcile()
        assert world.condition("Stalled")["reason"] == "InvalidSpec"
        assert "metadata.name" in world.condition("Stalled")["message"]


class TestObservationDetails:
    def test_foreign_job_is_not_trusted(self) -> None:
        world = World()
        world.reconcile()
        world.train_done()
        world.objects[("Job", "iris-train-1")]["metadata"]["ownerReferences"] = [
            {"uid": "someone-else", "controller": True}
        ]
        world.reconcile()
        assert world.status["step"] == "Pending"
        assert "another owner" in world.condition("Reconciling")["message"]

    def test_unschedulable_pod_is_explained(self) -> None:
        world = World()
        world.reconcile()
        pod = make_pod("p", phase="Pending")
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "pod has unbound immediate PersistentVolumeClaims",
            }
        ]
        world.set_job("train", pods=[pod])
        world.reconcile()
        message = world.condition("Reconciling")["message"]
        assert "unbound immediate PersistentVolumeClaims" in message
        assert "iris-artifacts is Pending" in message

    def test_collect_running_then_train_running(self) -> None:
        world = World()
        world.reconcile()
        world.set_job(
            "train",
            pods=[
                make_pod(
                    "p", init=[terminated("collect", 0, COLLECT_OK)], containers=[running("train")]
                )
            ],
        )
        world.reconcile()
        assert world.status["step"] == "Training"

    def test_retried_pod_reports_the_newest_failure(self) -> None:
        world = World()
        world.reconcile()
        older = make_pod(
            "p1",
            phase="Failed",
            created="2026-12-01T12:00:01Z",
            init=[terminated("collect", 0, COLLECT_OK)],
            containers=[terminated("train", 1, {"error": "first"})],
        )
        newer = make_pod(
            "p2",
            phase="Failed",
            created="2026-12-01T12:00:09Z",
            init=[terminated("collect", 0, COLLECT_OK)],
            containers=[terminated("train", 1, {"error": "second"})],
        )
        world.set_job(
            "train", pods=[older, newer], condition=("Failed", "BackoffLimitExceeded", "")
        )
        world.reconcile()
        assert "second" in world.condition("Stalled")["message"]

    def test_transition_time_changes_only_on_flip(self) -> None:
        world = World()
        world.reconcile()
        first = world.condition("Reconciling")["lastTransitionTime"]
        world.train_running()
        world.reconcile(advance=30)
        assert world.condition("Reconciling")["lastTransitionTime"] == first
        assert world.condition("Reconciling")["reason"] == "Training"

    def test_observed_generation_follows_every_reconcile(self) -> None:
        world = promoted_world()
        world.edit_spec(monitoring={"cooldownSeconds": 5})
        world.reconcile()
        assert world.status["observedGeneration"] == 2
        assert world.condition("Ready")["observedGeneration"] == 2


def test_evaluation_uses_the_image_that_trained() -> None:
    world = World()
    world.reconcile()
    world.train_done(train_ok(1))
    train = world.objects[("Job", "iris-train-1")]
    train["spec"]["template"]["spec"]["containers"][0]["image"] = "example.org/trainer:pinned"
    world.reconcile()
    evaluation = world.get("Job", "iris-eval-1")
    assert evaluation is not None
    assert evaluation["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "example.org/trainer:pinned"
    )


def test_now_is_the_only_clock() -> None:
    body = make_body()
    later = T0 + datetime.timedelta(hours=5)
    decision = decide(body, Observed(), later, SETTINGS)
    assert decision.status["lastTrigger"]["time"] == "2026-12-01T17:00:00Z"


def test_eval_ok_helper_is_consistent() -> None:
    assert eval_ok(0.5)["metrics"]["accuracy"] == 0.5
