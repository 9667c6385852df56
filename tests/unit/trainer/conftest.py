"""Fixtures for the workload (modelcycle_trainer) tests: real scikit-learn on bundled data.

A session-wide iris cycle (collected and trained once) is copied into each test's own
tmp_path when a test needs to write next to it, so tests stay independent and fast.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trainer_testlib import collect_and_train


@pytest.fixture(scope="session")
def iris_cycle_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    artifacts = tmp_path_factory.mktemp("iris-artifacts")
    _, trained = collect_and_train(artifacts, {"builtin": {"name": "iris"}})
    return artifacts, str(trained["version"])


@pytest.fixture
def iris_cycle(tmp_path: Path, iris_cycle_template: tuple[Path, str]) -> tuple[Path, str]:
    """(artifacts dir, model version) of a collected and trained iris cycle 1, private copy."""
    template, version = iris_cycle_template
    artifacts = tmp_path / "artifacts"
    shutil.copytree(template, artifacts)
    return artifacts, version


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over http on 127.0.0.1 and its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: Any, **kwargs: Any) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
