"""Memory limits for the node agent's containers, enforced by the kernel as a kubelet does.

Each container with ``resources.limits.memory`` gets a memory cgroup of its own (the
cgroup v1 memory controller, which is what this machine mounts at
``/sys/fs/cgroup/memory``), nested under the node agent's own cgroup so that nothing
escapes the limits the agent itself runs under. ``podexec`` moves itself into it before
it execs the container's command, so the command and every child it forks are charged to
it. Over the limit the kernel's OOM killer sends SIGKILL; the agent then reads the
cgroup's ``oom_kill`` count and reports ``reason: OOMKilled`` with exit code 137, as the
kubelet does.

Limits: where there is no writable cgroup v1 memory controller (for example a pure
cgroup v2 host that has not delegated the memory controller to the agent), limits are
not enforced and the agent says so once in its log. Swap is not limited separately
(``memory.memsw`` is set to the same value when the kernel has it). CPU limits are not
enforced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from pathlib import Path

log = logging.getLogger("node-agent")

V1_MEMORY = Path("/sys/fs/cgroup/memory")

_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": 0.001,
}
_QUANTITY = re.compile(r"^([+]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")


def parse_quantity(text: object) -> int | None:
    """A Kubernetes quantity (``512Mi``, ``1G``, ``1e9``, ``128974848``) in bytes, rounded up."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        return None
    try:
        value = float(m.group(1)) * _SUFFIX[m.group(2) or ""]
    except ValueError:
        return None
    return max(1, int(-(-value // 1)))


def _own_memory_cgroup() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return path
    return None


class MemoryCgroups:
    """One memory cgroup per running container, under ``<agent's cgroup>/modelcycle-<name>``."""

    def __init__(self, cluster_name: str) -> None:
        self.root: Path | None = None
        own = _own_memory_cgroup()
        if own is None or not (V1_MEMORY / "cgroup.procs").exists():
            log.warning("memory limits are not enforced: no cgroup v1 memory controller")
            return
        root = V1_MEMORY / own.lstrip("/") / f"modelcycle-{cluster_name}"
        try:
            root.mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("memory limits are not enforced: cannot create %s: %s", root, exc)
            return
        self.root = root
        for stale in root.iterdir():  # left by an agent that was killed
            if stale.is_dir():
                self.remove(stale)

    def create(self, key: str, limit_bytes: int) -> Path | None:
        """A fresh cgroup limited to ``limit_bytes``; None when limits cannot be enforced."""
        if self.root is None:
            return None
        path = self.root / key
        if path.exists():
            self.remove(path)
        try:
            path.mkdir()
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        except OSError as exc:
            log.warning("memory limit of %s not enforced: %s", key, exc)
            self.remove(path)
            return None
        for name, value in (("memory.memsw.limit_in_bytes", limit_bytes), ("memory.swappiness", 0)):
            with contextlib.suppress(OSError):
                (path / name).write_text(str(value))
        return path

    @staticmethod
    def oom_killed(path: Path | None) -> bool:
        """True when the kernel's OOM killer killed a process of this cgroup."""
        if path is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in (path / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
            return int((path / "memory.failcnt").read_text()) > 0
        return False

    def close(self) -> None:
        """Remove the agent's cgroup tree (every container has stopped by now)."""
        if self.root is None:
            return
        for child in self.root.iterdir():
            if child.is_dir():
                self.remove(child)
        self.remove(self.root)

    @staticmethod
    def remove(path: Path | None) -> None:
        """Kill whatever is left in the cgroup and remove it."""
        if path is None:
            return
        for _ in range(50):
            try:
                pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            try:
                path.rmdir()
                return
            except OSError:
                time.sleep(0.02)
        log.warning("could not remove cgroup %s", path)
