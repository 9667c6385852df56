"""A small raw REST client for the node agent: JSON in, JSON out, list+watch.

The node agent needs plain dicts and long-lived watches it controls itself, not the
generated models of the official client; this wraps urllib3 (which that client brings)
with the kubeconfig's server, CA and bearer token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

log = logging.getLogger("kubeapi")


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class KubeApi:
    def __init__(self, kubeconfig: Path) -> None:
        kc = json.loads(kubeconfig.read_text())
        cluster = kc["clusters"][0]["cluster"]
        self.server = cluster["server"].rstrip("/")
        self.token = kc["users"][0]["user"]["token"]
        self.pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=32,
            ca_certs=cluster["certificate-authority"],
            cert_reqs="CERT_REQUIRED",
            retries=False,
        )
        self.headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        url = self.server + path + (("?" + urlencode(params)) if params else "")
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        resp = self.pool.request(
            method,
            url,
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=5, read=timeout),
        )
        text = resp.data.decode(errors="replace")
        if resp.status >= 400:
            raise ApiError(resp.status, text)
        return json.loads(text) if text else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def strategic_patch(self, path: str, body: Any) -> Any:
        return self.request(
            "PATCH", path, body, content_type="application/strategic-merge-patch+json"
        )

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)

    def _watch_stream(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        url = (
            self.server
            + path
            + "?"
            + urlencode({**params, "watch": "1", "allowWatchBookmarks": "true"})
        )
        resp = self.pool.request(
            "GET",
            url,
            headers=self.headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=330),
        )
        try:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode(errors="replace"))
            buf = b""
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()

    def list_and_watch(
        self,
        path: str,
        on_event: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Informer-style loop: list, replay as ADDED, watch from the list's version;
        relist on 410 Gone or any error, until ``stop`` is set."""
        params = dict(params or {})
        while not stop.is_set():
            try:
                listing = self.get(path, **params)
                rv = listing["metadata"]["resourceVersion"]
                for item in listing.get("items", []):
                    on_event("ADDED", item)
                while not stop.is_set():
                    for ev in self._watch_stream(
                        path, {**params, "resourceVersion": rv, "timeoutSeconds": 300}
                    ):
                        if ev["type"] == "ERROR":
                            raise ApiError(
                                int(ev["object"].get("code", 500)), json.dumps(ev["object"])
                            )
                        rv = ev["object"]["metadata"]["resourceVersion"]
                        if ev["type"] != "BOOKMARK":
                            on_event(ev["type"], ev["object"])
                        if stop.is_set():
                            return
            except Exception as exc:  # noqa: BLE001 - an informer relists on any failure
                if stop.is_set():
                    return
                log.warning("watch %s: %s; relisting", path, exc)
                time.sleep(1.0)
