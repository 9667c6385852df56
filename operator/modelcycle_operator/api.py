"""The only module that talks to the Kubernetes API.

It uses ``kubernetes.client.ApiClient`` for configuration, authentication (in-cluster
service account, with token refresh, else the kubeconfig) and transport, and sends every
request through one wrapper, :func:`_call`, which is also the one place that decides what a
status code means: 404 on a read is "absent" (``None``), 409 on a create is "already exists,
fine", anything else non-2xx raises :class:`ApiError`. Objects go in and come out as plain
dicts exactly as the API server speaks them (camelCase), so the pure layer never sees a
client model class.

Writes:

- Jobs and the PVC: create-if-absent (a Job's pod template is immutable anyway).
- Deployment and Service: server-side apply, field manager ``modelcycle-operator``, force.
- ModelCycle status: a JSON merge patch on the ``status`` subresource only (never spec),
  with ``metadata.resourceVersion`` as a precondition so a status computed from a stale
  read is refused (409) instead of written.
- Events: ``v1`` Events on the ModelCycle, which ``kubectl describe`` shows.

Limits: synchronous (kopf runs sync handlers in its thread pool; the ApiClient's urllib3
pool is thread-safe). No retries here: the reconcile is level-triggered and the next
event or timer tick repeats the work.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from modelcycle_operator.pure import naming

__all__ = [
    "ApiError",
    "apply_deployment",
    "apply_service",
    "create_job",
    "create_pvc",
    "get_deployment",
    "get_job",
    "get_modelcycle",
    "get_pvc",
    "get_service",
    "list_objects",
    "list_pods",
    "patch_modelcycle_status",
    "post_event",
]

REQUEST_TIMEOUT = 30.0
_MAX_EVENT_MESSAGE = 1024


class ApiError(Exception):
    """A request failed; ``status`` is the HTTP code (0 when no response came)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409


class _Shared:
    """One ApiClient for the process, built on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: k8s_client.ApiClient | None = None

    def get(self) -> k8s_client.ApiClient:
        with self._lock:
            if self._client is None:
                self._client = _new_client()
            return self._client


def _new_client() -> k8s_client.ApiClient:
    """In-cluster config (the pod's service account) when in a pod, else the kubeconfig."""
    configuration = k8s_client.Configuration()
    # The config loaders carry no type hints; call them through Any.
    load_incluster: Any = k8s_config.load_incluster_config
    load_kubeconfig: Any = k8s_config.load_kube_config
    try:
        load_incluster(client_configuration=configuration)
    except k8s_config.ConfigException:
        load_kubeconfig(client_configuration=configuration)
    api_client = k8s_client.ApiClient(configuration)
    api_client.user_agent = f"{naming.OPERATOR_NAME}/0.1.0"
    return api_client


_shared = _Shared()


def _client() -> k8s_client.ApiClient:
    return _shared.get()


def _call(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: Mapping[str, str] | None = None,
    content_type: str | None = None,
    missing_ok: bool = False,
    exists_ok: bool = False,
) -> dict[str, Any] | None:
    """Send one request; 404 -> None if ``missing_ok``, 409 -> None if ``exists_ok``."""
    api = _client()
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    try:
        request = api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query.items()) if query else None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response: Any = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        raw = response.read()
        status = int(response.status)
    except Exception as exc:  # a transport failure: no HTTP status to act on
        raise ApiError(0, type(exc).__name__, str(exc)) from exc
    data: Any = None
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            data = {"message": raw.decode("utf-8", "replace")[:500]}
    if 200 <= status < 300:
        return data if isinstance(data, dict) else {}
    if status == 404 and missing_ok:
        return None
    if status == 409 and exists_ok:
        return None
    reason = str((data or {}).get("reason") or "") if isinstance(data, dict) else ""
    message = str((data or {}).get("message") or "") if isinstance(data, dict) else ""
    raise ApiError(status, reason or "Error", message or f"{method} {path}")


def _path(prefix: str, namespace: str, plural: str, name: str | None = None) -> str:
    path = f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path


_CORE = "/api/v1"
_BATCH = "/apis/batch/v1"
_APPS = "/apis/apps/v1"
_MC = f"/apis/{naming.GROUP}/{naming.VERSION}"


# --- the ModelCycle ----------------------------------------------------------------------


def get_modelcycle(namespace: str, name: str) -> dict[str, Any] | None:
    return _call("GET", _path(_MC, namespace, naming.PLURAL, name), missing_ok=True)


def patch_modelcycle_status(
    namespace: str,
    name: str,
    status_patch: Mapping[str, Any],
    resource_version: str | None,
) -> dict[str, Any] | None:
    """Merge-patch ``status`` (only) through the status subresource; None if it is gone."""
    body: dict[str, Any] = {"status": dict(status_patch)}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return _call(
        "PATCH",
        _path(_MC, namespace, naming.PLURAL, name) + "/status",
        body=body,
        content_type="application/merge-patch+json",
        missing_ok=True,
    )


# --- children ----------------------------------------------------------------------------


def _create(prefix: str, plural: str, manifest: Mapping[str, Any]) -> bool:
    """Create; False when it already existed (409), which is fine."""
    namespace = str(manifest["metadata"]["namespace"])
    created = _call(
        "POST",
        _path(prefix, namespace, plural),
        body=dict(manifest),
        query={"fieldManager": naming.FIELD_MANAGER},
        exists_ok=True,
    )
    return created is not None


def _apply(prefix: str, plural: str, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    meta = manifest["metadata"]
    return _call(
        "PATCH",
        _path(prefix, str(meta["namespace"]), plural, str(meta["name"])),
        body=dict(manifest),
        query={"fieldManager": naming.FIELD_MANAGER, "force": "true"},
        content_type="application/apply-patch+yaml",
    )


def get_pvc(namespace: str, name: str) -> dict[str, Any] | None:
    return _call("GET", _path(_CORE, namespace, "persistentvolumeclaims", name), missing_ok=True)


def create_pvc(manifest: Mapping[str, Any]) -> bool:
    return _create(_CORE, "persistentvolumeclaims", manifest)


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    return _call("GET", _path(_BATCH, namespace, "jobs", name), missing_ok=True)


def create_job(manifest: Mapping[str, Any]) -> bool:
    return _create(_BATCH, "jobs", manifest)


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    result = _call("GET", _path(_CORE, namespace, "pods"), query={"labelSelector": label_selector})
    items = (result or {}).get("items") or []
    return [item for item in items if isinstance(item, dict)]


def list_job_pods(namespace: str, job_name: str) -> list[dict[str, Any]]:
    return list_pods(namespace, f"{naming.LABEL_JOB_NAME}={job_name}")


def get_deployment(namespace: str, name: str) -> dict[str, Any] | None:
    return _call("GET", _path(_APPS, namespace, "deployments", name), missing_ok=True)


def apply_deployment(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    return _apply(_APPS, "deployments", manifest)


def get_service(namespace: str, name: str) -> dict[str, Any] | None:
    return _call("GET", _path(_CORE, namespace, "services", name), missing_ok=True)


def apply_service(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    return _apply(_CORE, "services", manifest)


#: The watched kinds by plural, for :func:`list_objects`.
_LISTABLE = {
    naming.PLURAL: _MC,
    "jobs": _BATCH,
    "deployments": _APPS,
    "pods": _CORE,
    "services": _CORE,
    "persistentvolumeclaims": _CORE,
}
_LIST_PAGE = 500


def list_objects(
    plural: str, namespace: str | None, label_selector: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every object of a watched kind in ``namespace`` (None: cluster-wide), fetched in
    pages of 500 as the caller iterates (so it can keep less of each than the API sends).

    Each item gets the ``apiVersion`` and ``kind`` a watch event carries (a LIST gives
    them only once, on the list). Raises :class:`ApiError` while iterating.
    """
    prefix = _LISTABLE[plural]
    path = f"{prefix}/{plural}" if namespace is None else _path(prefix, namespace, plural)
    token = ""
    while True:
        query = {"limit": str(_LIST_PAGE)}
        if label_selector:
            query["labelSelector"] = label_selector
        if token:
            query["continue"] = token
        result = _call("GET", path, query=query) or {}
        api_version = str(result.get("apiVersion") or "")
        kind = str(result.get("kind") or "").removesuffix("List")
        for item in result.get("items") or []:
            if isinstance(item, dict):
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                yield item
        token = str((result.get("metadata") or {}).get("continue") or "")
        if not token:
            return


# --- events ------------------------------------------------------------------------------


def post_event(
    involved: Mapping[str, Any], type_: str, reason: str, message: str
) -> dict[str, Any] | None:
    """Post a v1 Event about ``involved`` (a ModelCycle body or an object reference)."""
    meta = involved.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    if len(message) > _MAX_EVENT_MESSAGE:
        message = message[: _MAX_EVENT_MESSAGE - 3] + "..."
    now = datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta.get('name') or 'modelcycle'}.",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": str(involved.get("apiVersion") or naming.API_VERSION),
            "kind": str(involved.get("kind") or naming.KIND),
            "name": str(meta.get("name") or ""),
            "namespace": namespace,
            "uid": str(meta.get("uid") or ""),
            "resourceVersion": str(meta.get("resourceVersion") or ""),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "action": reason,
        "source": {"component": naming.OPERATOR_NAME},
        "reportingComponent": naming.OPERATOR_NAME,
        "reportingInstance": os.environ.get("POD_NAME") or socket.gethostname(),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "count": 1,
    }
    return _call("POST", _path(_CORE, namespace, "events"), body=body)
