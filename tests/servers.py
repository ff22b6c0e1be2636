"""Servers the tests start on loopback: free ports, and `se-search dashboard` in a process."""

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    url: str  # http://127.0.0.1:PORT
    studies: list[dict]  # what /api/studies answered first
    stderr: list[str] = field(default_factory=list)  # filled when the server has stopped


@contextmanager
def dashboard(storage: str, *, host: str = "127.0.0.1") -> Iterator[Dashboard]:
    """`se-search dashboard` on ``storage``, once its API answers; stopped after."""
    port = free_port()
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
        assert body is not None, "the dashboard never answered"
        server = Dashboard(url, body["study_summaries"])
        yield server
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    server.stderr.append(err)
