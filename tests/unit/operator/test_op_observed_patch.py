"""Summaries of raw children (termination messages, rollout state) and merge patches."""

from __future__ import annotations

from typing import Any

import pytest
from modelcycle_fakes import make_pod, running, terminated, waiting

from modelcycle_operator.pure import naming
from modelcycle_operator.pure.observed import (
    ContainerResult,
    parse_message,
    summarize_deployment,
    summarize_job,
    summarize_pod,
    summarize_pvc,
)
from modelcycle_operator.pure.patch import apply_merge_patch, merge_patch


class TestTerminationMessages:
    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ('{"version": "1-abc"}', {"version": "1-abc"}),
            ('  {"a": 1}\n', {"a": 1}),
            ("[1, 2]", None),
            ("Traceback ...", None),
            ("{broken", None),
            ("", None),
        ],
    )
    def test_parse_message(self, message: str, expected: dict[str, Any] | None) -> None:
        assert parse_message(message) == expected

    @pytest.mark.parametrize(
        ("result", "expected"),
        [
            (
                ContainerResult(
                    "t", "terminated", 1, "Error", '{"error": "module os not allowed"}'
                ),
                "module os not allowed",
            ),
            (
                ContainerResult("t", "terminated", 2, "Error", "line one\nValueError: bad\n"),
                "ValueError: bad (exit code 2)",
            ),
            (
                ContainerResult("t", "terminated", 137, "OOMKilled", ""),
                "killed (SIGKILL, exit code 137): out of memory (OOMKilled)",
            ),
            (  # no reason from the runtime: the exit code alone still says SIGKILL
                ContainerResult("t", "terminated", 137, "Error", ""),
                "killed (SIGKILL, exit code 137): out of memory, deleted, or stopped past its "
                "grace period or deadline",
            ),
            (  # the log tail kept by FallbackToLogsOnError, with the kill explained
                ContainerResult("t", "terminated", 137, "Error", "fitting...\nKilled\n"),
                "Killed (killed (SIGKILL, exit code 137): out of memory, deleted, or stopped "
                "past its grace period or deadline)",
            ),
            (  # the runtime's signal field, without a 128+n exit code
                ContainerResult("t", "terminated", 1, "Error", "", signal=9),
                "killed (SIGKILL, exit code 1): out of memory, deleted, or stopped past its "
                "grace period or deadline",
            ),
            (
                ContainerResult("t", "terminated", 143, "Error", ""),
                "terminated (SIGTERM, exit code 143): asked to stop, e.g. deleted or past its "
                "deadline",
            ),
            (
                ContainerResult("t", "terminated", 139, "Error", ""),
                "killed by SIGSEGV, exit code 139",
            ),
            (  # a workload's own error still comes first
                ContainerResult("t", "terminated", 137, "OOMKilled", '{"error": "too big"}'),
                "too big",
            ),
            (  # an ordinary exit code above 128 that is not a signal range stays a code
                ContainerResult("t", "terminated", 200, "Error", ""),
                "exited with code 200 (Error)",
            ),
            (
                ContainerResult(
                    "t",
                    "waiting",
                    reason="CrashLoopBackOff",
                    restart_count=3,
                    last_exit_code=137,
                    last_reason="OOMKilled",
                ),
                "CrashLoopBackOff: killed (SIGKILL, exit code 137): out of memory (OOMKilled)",
            ),
            (
                ContainerResult(
                    "t",
                    "waiting",
                    reason="CrashLoopBackOff",
                    last_exit_code=1,
                    last_message='{"error": "port in use"}',
                ),
                "CrashLoopBackOff: port in use",
            ),
            (
                ContainerResult("t", "waiting", reason="ImagePullBackOff", message="no such image"),
                "ImagePullBackOff (no such image)",
            ),
        ],
    )
    def test_explain(self, result: ContainerResult, expected: str) -> None:
        assert result.explain() == expected


class TestJobSummary:
    def test_conditions_and_containers(self) -> None:
        job = {
            "metadata": {
                "name": "iris-train-1",
                "annotations": {naming.ANNOTATION_INPUTS_HASH: "abc"},
                "ownerReferences": [{"uid": "u1", "controller": True}],
            },
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [{"name": "collect", "image": "img:1"}],
                        "containers": [{"name": "train", "image": "img:1"}],
                    }
                }
            },
            "status": {
                "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}],
            },
        }
        pods = [
            make_pod(
                "p",
                phase="Succeeded",
                init=[terminated("collect", 0, {"rows": 3})],
                containers=[terminated("train", 0, {"version": "1-x"})],
            )
        ]
        summary = summarize_job(job, pods)
        assert summary.complete
        assert summary.failure is None
        assert summary.inputs_hash == "abc"
        assert summary.owner_uid == "u1"
        assert summary.images == {"collect": "img:1", "train": "img:1"}
        collect = summary.succeeded_container("collect")
        assert collect is not None
        assert collect.data == {"rows": 3}

    @pytest.mark.parametrize(
        ("conditions", "complete", "failed"),
        [
            ([], False, False),
            ([{"type": "SuccessCriteriaMet", "status": "True"}], True, False),
            ([{"type": "Complete", "status": "False"}], False, False),
            (
                [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}],
                False,
                True,
            ),
            ([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}], False, True),
        ],
    )
    def test_terminal_conditions(
        self, conditions: list[dict[str, str]], complete: bool, failed: bool
    ) -> None:
        summary = summarize_job({"metadata": {"name": "j"}, "status": {"conditions": conditions}})
        assert summary.complete is complete
        assert (summary.failure is not None) is failed

    @staticmethod
    def owned(pod: dict[str, Any], uid: str = "job-uid") -> dict[str, Any]:
        pod["metadata"]["ownerReferences"] = [{"kind": "Job", "uid": uid, "controller": True}]
        return pod

    def running_job(self, **status: Any) -> dict[str, Any]:
        return {"metadata": {"name": "j", "uid": "job-uid"}, "status": {"active": 1, **status}}

    def succeeded_pod(self, name: str = "p", created: str = "2026-12-01T12:00:01Z") -> Any:
        return self.owned(
            make_pod(
                name,
                phase="Succeeded",
                created=created,
                init=[terminated("collect", 0, {"rows": 3})],
                containers=[terminated("train", 0, {"version": "1-x"})],
            )
        )

    def test_complete_when_the_pod_succeeded_before_the_job_condition(self) -> None:
        summary = summarize_job(self.running_job(), [self.succeeded_pod()])
        assert not summary.has_complete_condition
        assert summary.complete
        train = summary.succeeded_container("train")
        assert train is not None
        assert train.data == {"version": "1-x"}

    @pytest.mark.parametrize(
        "pod",
        [
            # phase Succeeded is not enough: every container must say exit 0
            make_pod("p", phase="Succeeded", containers=[running("train")]),
            make_pod("p", phase="Succeeded", containers=[terminated("train", 1, "")]),
            make_pod(
                "p",
                phase="Succeeded",
                init=[terminated("collect", 2, "")],
                containers=[terminated("train", 0, {"version": "1-x"})],
            ),
            make_pod("p", phase="Succeeded", containers=[]),  # no statuses reported yet
            # all containers exited 0, but the kubelet has not reported the phase yet
            make_pod("p", phase="Running", containers=[terminated("train", 0, {"version": "x"})]),
            make_pod("p", phase="Failed", containers=[terminated("train", 0, {"version": "x"})]),
        ],
    )
    def test_not_complete_without_a_clean_succeeded_pod(self, pod: dict[str, Any]) -> None:
        assert not summarize_job(self.running_job(), [self.owned(pod)]).complete

    def test_only_the_newest_pod_counts(self) -> None:
        old = self.succeeded_pod("old", created="2026-12-01T12:00:00Z")
        new = self.owned(
            make_pod("new", created="2026-12-01T12:01:00Z", containers=[running("train")])
        )
        assert not summarize_job(self.running_job(), [old, new]).complete
        # the other way round: a retry that succeeded after a failed first pod
        failed = self.owned(
            make_pod(
                "first",
                phase="Failed",
                created="2026-12-01T12:00:00Z",
                containers=[terminated("train", 1, "")],
            )
        )
        retried = self.succeeded_pod("second", created="2026-12-01T12:01:00Z")
        assert summarize_job(self.running_job(failed=1), [failed, retried]).complete

    def test_a_pod_of_another_job_with_the_same_name_does_not_count(self) -> None:
        stale = self.owned(self.succeeded_pod(), uid="old-job-uid")
        assert not summarize_job(self.running_job(), [stale]).complete

    def test_a_failed_condition_wins_over_a_succeeded_pod(self) -> None:
        job = self.running_job(
            conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
        )
        summary = summarize_job(job, [self.succeeded_pod()])
        assert summary.failure is not None
        assert not summary.complete

    def test_newest_pod_first(self) -> None:
        pods = [
            make_pod("old", created="2026-12-01T12:00:00Z", containers=[running("train")]),
            make_pod("new", created="2026-12-01T12:01:00Z", containers=[waiting("train", "X")]),
        ]
        summary = summarize_job({"metadata": {"name": "j"}}, pods)
        assert summary.newest_pod is not None
        assert summary.newest_pod.name == "new"

    def test_unschedulable_pod(self) -> None:
        pod = make_pod("p", phase="Pending")
        pod["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"}
        ]
        assert summarize_pod(pod).unschedulable == "0/1 nodes are available"


class TestDeploymentSummary:
    def deployment(self, **status: Any) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "iris-serving",
                "generation": 3,
                "annotations": {naming.ANNOTATION_APPLIED_HASH: "h"},
            },
            "spec": {
                "replicas": 2,
                "template": {"metadata": {"annotations": {naming.ANNOTATION_MODEL_VERSION: "2-x"}}},
            },
            "status": status,
        }

    @pytest.mark.parametrize(
        ("status", "rolled_out"),
        [
            (
                {
                    "observedGeneration": 3,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "availableReplicas": 2,
                },
                True,
            ),
            (
                {
                    "observedGeneration": 2,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "availableReplicas": 2,
                },
                False,
            ),
            (
                {
                    "observedGeneration": 3,
                    "replicas": 3,
                    "updatedReplicas": 2,
                    "availableReplicas": 2,
                },
                False,
            ),
            (
                {
                    "observedGeneration": 3,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "availableReplicas": 1,
                },
                False,
            ),
            ({}, False),
        ],
    )
    def test_rolled_out(self, status: dict[str, Any], rolled_out: bool) -> None:
        summary = summarize_deployment(self.deployment(**status))
        assert summary.rolled_out is rolled_out
        assert summary.model_version == "2-x"
        assert summary.applied_hash == "h"

    @pytest.mark.parametrize(("observed", "exceeded"), [(3, True), (2, False)])
    def test_deadline_exceeded_counts_only_at_generation(
        self, observed: int, exceeded: bool
    ) -> None:
        summary = summarize_deployment(
            self.deployment(
                observedGeneration=observed,
                conditions=[
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ],
            )
        )
        assert (summary.deadline_exceeded is not None) is exceeded

    def test_zero_replicas(self) -> None:
        raw = self.deployment(observedGeneration=3)
        raw["spec"]["replicas"] = 0
        assert summarize_deployment(raw).rolled_out


def test_pvc_summary() -> None:
    assert summarize_pvc({"metadata": {"name": "x"}, "status": {"phase": "Bound"}}).phase == "Bound"
    assert summarize_pvc({"metadata": {"name": "x"}}).phase == "Pending"


class TestMergePatch:
    @pytest.mark.parametrize(
        ("old", "new", "patch"),
        [
            ({}, {}, {}),
            ({"a": 1}, {"a": 1}, {}),
            ({"a": 1}, {"a": 1.0}, {}),
            ({"a": 1}, {"a": 2}, {"a": 2}),
            ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
            ({"m": {"x": 1, "y": 2}}, {"m": {"x": 1, "y": 3}}, {"m": {"y": 3}}),
            ({"m": {"x": 1}}, {"m": {}}, {"m": {"x": None}}),
            ({"l": [1, 2]}, {"l": [1, 2, 3]}, {"l": [1, 2, 3]}),
            ({}, {"n": {"a": None, "b": 1}}, {"n": {"b": 1}}),
            ({}, {"gone": None}, {}),
            ({"gone": 1}, {"gone": None}, {"gone": None}),
            ({"t": True}, {"t": 1}, {"t": 1}),
        ],
    )
    def test_merge_patch(
        self, old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]
    ) -> None:
        assert merge_patch(old, new) == patch

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ({"a": {"b": {"c": 1}}, "d": [1]}, {"a": {"b": {"e": 2}}, "d": []}),
            ({"champion": {"version": "1"}}, {"champion": {"version": "2", "score": 0.9}}),
            ({"x": 1}, {}),
        ],
    )
    def test_roundtrip(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        assert apply_merge_patch(old, merge_patch(old, new)) == new
