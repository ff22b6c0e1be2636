"""``se-search dashboard`` in a child process, for the browser and dashboard tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from se_search.errors import SESearchError

__all__ = ["DashboardProcess", "dashboard_process"]


@dataclass
class DashboardProcess:
    url: str  # http://127.0.0.1:PORT
    studies: list[dict]  # what /api/studies answered first
    stderr: list[str] = field(default_factory=list)  # its output, once it has stopped


@contextmanager
def dashboard_process(storage: str, *, host: str = "127.0.0.1") -> Iterator[DashboardProcess]:
    """``se-search dashboard`` in a child process on a free port, once its API answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).with_name("se-search"))
    proc = subprocess.Popen(
        [exe, "dashboard", "--storage", storage, "--host", host, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/api/studies", timeout=2) as answer:
                    body = json.loads(answer.read())
            except OSError:
                time.sleep(0.3)
        if body is None:
            raise SESearchError(f"se-search dashboard on {url} did not answer within 60 s")
        server = DashboardProcess(url, body["study_summaries"])
        yield server
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    server.stderr.append(err)
