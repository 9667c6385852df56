"""The API wrapper against a local HTTP server: paths, content types, what 404/409 mean."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from kubernetes import client as k8s_client

from modelcycle_operator import api


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    replies: ClassVar[dict[tuple[str, str], tuple[int, dict[str, Any]]]] = {}

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path, _, query = self.path.partition("?")
        self.requests.append(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "content_type": self.headers.get("Content-Type"),
                "body": body,
            }
        )
        status, reply = self.replies.get((self.command, path), (200, {"kind": "Ok"}))
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Handler]]:
    _Handler.requests = []
    _Handler.replies = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    configuration = k8s_client.Configuration(host=f"http://127.0.0.1:{httpd.server_address[1]}")
    api_client = k8s_client.ApiClient(configuration)
    monkeypatch.setattr(api, "_client", lambda: api_client)
    try:
        yield _Handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
        api_client.rest_client.pool_manager.clear()


NOT_FOUND = (404, {"kind": "Status", "reason": "NotFound", "message": "not found"})
EXISTS = (409, {"kind": "Status", "reason": "AlreadyExists", "message": "exists"})


def test_get_missing_is_none(server: type[_Handler]) -> None:
    server.replies[("GET", "/apis/batch/v1/namespaces/ml/jobs/iris-train-1")] = NOT_FOUND
    assert api.get_job("ml", "iris-train-1") is None


def test_get_returns_plain_dict(server: type[_Handler]) -> None:
    server.replies[("GET", "/apis/modelcycle.dev/v1alpha1/namespaces/ml/modelcycles/iris")] = (
        200,
        {"metadata": {"name": "iris"}, "status": {"cycle": 2}},
    )
    assert api.get_modelcycle("ml", "iris") == {
        "metadata": {"name": "iris"},
        "status": {"cycle": 2},
    }


def test_create_existing_is_fine(server: type[_Handler]) -> None:
    server.replies[("POST", "/apis/batch/v1/namespaces/ml/jobs")] = EXISTS
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ml"}}
    assert api.create_job(job) is False
    (request,) = server.requests
    assert request["body"] == job
    assert "fieldManager=modelcycle-operator" in request["query"]


def test_create_new_is_true(server: type[_Handler]) -> None:
    pvc = {"metadata": {"name": "iris-artifacts", "namespace": "ml"}}
    assert api.create_pvc(pvc) is True
    assert server.requests[0]["path"] == "/api/v1/namespaces/ml/persistentvolumeclaims"


def test_other_errors_raise(server: type[_Handler]) -> None:
    server.replies[("GET", "/api/v1/namespaces/ml/services/x")] = (
        403,
        {"kind": "Status", "reason": "Forbidden", "message": "no"},
    )
    with pytest.raises(api.ApiError) as caught:
        api.get_service("ml", "x")
    assert caught.value.status == 403
    assert caught.value.reason == "Forbidden"


def test_server_side_apply(server: type[_Handler]) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "iris-serving", "namespace": "ml"},
        "spec": {"replicas": 1},
    }
    api.apply_deployment(deployment)
    (request,) = server.requests
    assert request["method"] == "PATCH"
    assert request["path"] == "/apis/apps/v1/namespaces/ml/deployments/iris-serving"
    assert request["content_type"] == "application/apply-patch+yaml"
    assert "fieldManager=modelcycle-operator" in request["query"]
    assert "force=true" in request["query"]
    assert request["body"] == deployment


def test_status_patch_touches_only_status(server: type[_Handler]) -> None:
    api.patch_modelcycle_status("ml", "iris", {"step": "Training"}, "42")
    (request,) = server.requests
    assert request["path"] == "/apis/modelcycle.dev/v1alpha1/namespaces/ml/modelcycles/iris/status"
    assert request["content_type"] == "application/merge-patch+json"
    assert request["body"] == {
        "status": {"step": "Training"},
        "metadata": {"resourceVersion": "42"},
    }


def test_status_conflict_is_reported(server: type[_Handler]) -> None:
    path = "/apis/modelcycle.dev/v1alpha1/namespaces/ml/modelcycles/iris/status"
    server.replies[("PATCH", path)] = (409, {"kind": "Status", "reason": "Conflict"})
    with pytest.raises(api.ApiError) as caught:
        api.patch_modelcycle_status("ml", "iris", {"step": "Training"}, "1")
    assert caught.value.conflict


def test_list_job_pods_by_label(server: type[_Handler]) -> None:
    server.replies[("GET", "/api/v1/namespaces/ml/pods")] = (200, {"items": [{"metadata": {}}]})
    assert api.list_job_pods("ml", "iris-train-1") == [{"metadata": {}}]
    query = urllib.parse.parse_qs(server.requests[0]["query"])
    assert query["labelSelector"] == ["batch.kubernetes.io/job-name=iris-train-1"]


def test_event_on_the_modelcycle(server: type[_Handler]) -> None:
    body = {
        "apiVersion": "modelcycle.dev/v1alpha1",
        "kind": "ModelCycle",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u"},
    }
    api.post_event(body, "Warning", "TrainingFailed", "x" * 2000)
    (request,) = server.requests
    assert request["path"] == "/api/v1/namespaces/ml/events"
    event = request["body"]
    assert event["involvedObject"]["kind"] == "ModelCycle"
    assert event["involvedObject"]["uid"] == "u"
    assert (event["type"], event["reason"]) == ("Warning", "TrainingFailed")
    assert len(event["message"]) <= 1024
    assert event["source"] == {"component": "modelcycle-operator"}


def test_transport_failure_is_an_api_error(monkeypatch: pytest.MonkeyPatch) -> None:
    configuration = k8s_client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    api_client = k8s_client.ApiClient(configuration)
    monkeypatch.setattr(api, "_client", lambda: api_client)
    with pytest.raises(api.ApiError) as caught:
        api.get_pvc("ml", "x")
    assert caught.value.status == 0


def test_list_objects_cluster_wide_gives_each_item_its_kind(server: type[_Handler]) -> None:
    server.replies[("GET", "/api/v1/persistentvolumeclaims")] = (
        200,
        {"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "items": [{"metadata": {}}]},
    )
    items = list(api.list_objects("persistentvolumeclaims", None, "a=b,c"))
    assert items == [{"metadata": {}, "apiVersion": "v1", "kind": "PersistentVolumeClaim"}]
    query = urllib.parse.parse_qs(server.requests[0]["query"])
    assert query["labelSelector"] == ["a=b,c"]
    assert query["limit"] == ["500"]


def test_list_objects_follows_the_continue_token(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    pages = {
        "": {"items": [{"metadata": {"name": "a"}}], "metadata": {"continue": "t1"}},
        "t1": {"items": [{"metadata": {"name": "b"}}], "metadata": {}},
    }

    def fake_call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        query = dict(kwargs["query"])
        seen.append((path, query))
        return pages[query.get("continue", "")]

    monkeypatch.setattr(api, "_call", fake_call)
    names = [i["metadata"]["name"] for i in api.list_objects("modelcycles", "ml")]
    assert names == ["a", "b"]
    assert [p for p, _ in seen] == ["/apis/modelcycle.dev/v1alpha1/namespaces/ml/modelcycles"] * 2
    assert "labelSelector" not in seen[0][1]
