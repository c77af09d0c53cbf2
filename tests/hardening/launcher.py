"""Start ``ghacache serve`` processes by forking one interpreter that has its libraries loaded.

The crash suite starts about a hundred servers. A fresh interpreter spends most of its
start-up (over a second on a 2-core machine) importing aiohttp, cryptography, jinja2,
psycopg and obstore; forked from here, a server only imports ghacache itself, so
``ghacache.crashpoints`` still reads ``GHACACHE_CRASH_AT`` from the child's own environment.
Each child runs ``ghacache.cli.main.main(["serve", ...])``, the console script's entry point.

Run as a script (it never imports ghacache). One JSON object a line:

- stdin: ``{"argv": [...], "env": {...}, "stdout": PATH, "stderr": PATH}`` starts a server;
- stdout: ``{"ready": true}`` once loaded, ``{"pid": N}`` for every start, in order,
  and ``{"exited": N, "returncode": R}`` when a child ends (R < 0: killed by signal -R).

At end of input it kills whatever children are left and exits.
"""

from __future__ import annotations

import importlib
import json
import os
import selectors
import signal
import sys
import traceback
from typing import Any

# What ghacache's server imports from outside itself (the standard library comes along).
PRELOAD = (
    "aiohttp",
    "aiohttp.web",
    "argparse",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "defusedxml.ElementTree",
    "jinja2",
    "jwt",
    "jwt.algorithms",
    "obstore",
    "obstore.store",
    "prometheus_client",
    "psycopg",
    "psycopg_pool",
    "sqlite3",
)


def _say(message: dict[str, Any]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become ``ghacache serve`` with the requested files and env."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        stdin = os.open(os.devnull, os.O_RDONLY)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        stdout = os.open(request["stdout"], flags, 0o600)
        stderr = os.open(request["stderr"], flags, 0o600)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)  # the launcher's pipes and selector are not the server's
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["ghacache", *request["argv"]]
        from ghacache.cli.main import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _say({"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


def main() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    # Forking is safe only while this process has one thread, and each child must import
    # ghacache (which reads GHACACHE_CRASH_AT) itself.
    assert len(os.listdir("/proc/self/task")) == 1, "a preloaded library started a thread"
    assert not any(m.startswith("ghacache") for m in sys.modules), "ghacache was preloaded"
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the selector
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children: set[int] = set()
    pending = b""
    _say({"ready": True})
    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                os.read(wake_r, 4096)
                _reap(children)
                continue
            data = os.read(0, 1 << 16)
            if not data:
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children.add(pid)
                _say({"pid": pid})


if __name__ == "__main__":
    main()
