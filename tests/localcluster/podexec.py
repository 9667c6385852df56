"""The container's first moments: mounts, identity, then exec of its command.

The node agent starts ``ip netns exec <pod netns> unshare --mount --propagation private
python -m localcluster.podexec SPEC.json``: by the time this runs, the process is in the
pod's network namespace and in a private mount namespace of its own. Here, still root, it
bind-mounts each volume at its mountPath (read-only where asked), the termination-message
file at its path, makes the root filesystem read-only when the securityContext says so,
drops to the container's user and groups, changes to workingDir and execs the command --
so the PID the agent holds is the container's main process.

Limits: the mount points are created on the host's filesystem (empty directories or empty
files) when missing, since a bind mount needs a target; nothing is ever written into them
from here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
from pathlib import Path

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(src: str | None, dst: str, flags: int) -> None:
    if _libc.mount(src.encode() if src else None, dst.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {dst}: {os.strerror(err)}")


def bind(src: str, dst: str, read_only: bool, is_dir: bool) -> None:
    target = Path(dst)
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.touch()
    _mount(src, dst, MS_BIND | MS_REC)
    if read_only:
        _mount(None, dst, MS_REMOUNT | MS_BIND | MS_RDONLY)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        # Into the container's memory cgroup first: the command exec'd below, and all it
        # forks, are charged to it (and OOM-killed over its limit).
        fd = spec.get("cgroupProcsFd")
        if fd is not None:
            os.write(int(fd), str(os.getpid()).encode())
            os.close(int(fd))
        # Every source is opened before anything is mounted: a volume mounted at /tmp (or
        # any other parent of the agent's state directory) must not hide a later source.
        sources = [(os.open(m["source"], os.O_PATH), m) for m in spec["mounts"]]
        # The program set an image names (the project and its virtualenv) must stay
        # visible, as an image's own files would, even under a volume such as /tmp.
        kept = [(os.open(p, os.O_PATH), p) for p in spec.get("preserve", [])]
        for fd, m in sources:
            is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
            bind(f"/proc/self/fd/{fd}", m["target"], bool(m.get("readOnly")), is_dir)
            os.close(fd)
        for fd, path in kept:
            held, seen = os.fstat(fd), os.stat(path) if os.path.exists(path) else None
            if seen is None or (seen.st_dev, seen.st_ino) != (held.st_dev, held.st_ino):
                bind(f"/proc/self/fd/{fd}", path, True, True)
            os.close(fd)
        if spec.get("readOnlyRootFilesystem"):
            _mount(None, "/", MS_REMOUNT | MS_BIND | MS_RDONLY)
        gid = spec.get("gid")
        uid = spec.get("uid")
        groups = [int(g) for g in spec.get("groups", [])]
        if gid is not None or groups:
            os.setgroups(groups)
        if gid is not None:
            os.setgid(int(gid))
        if uid is not None:
            os.setuid(int(uid))
        os.chdir(spec.get("workingDir") or "/")
        argv = spec["argv"]
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        # Seen by the agent as exit code 128 and this line in the container log.
        sys.stderr.write(f"container start failed: {exc}\n")
        msg_path = spec.get("terminationHostPath")
        if msg_path:
            Path(msg_path).write_text(f"container start failed: {exc}")
        os._exit(128)


if __name__ == "__main__":
    main()
