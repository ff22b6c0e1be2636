"""A throwaway PostgreSQL server for tests: Debian's binaries, a temp data dir, loopback only.

Skips (with the reason) where the server binaries are absent. As root, the server runs as
the ``postgres`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import free_port


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database on a private server; stop it after."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql")
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="se-search-pg-"))
    data, port = root / "data", free_port()
    if as_user:
        shutil.chown(root, "postgres")
    run = lambda *cmd: subprocess.run(  # noqa: E731
        [*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120
    )
    try:
        run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        run(
            pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "start", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
        )  # fmt: skip
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE se_test")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/se_test"
    finally:
        if (data / "postmaster.pid").exists():
            run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def new_database(server_url: str, name: str) -> str:
    """Create the empty database ``name`` on the server of ``server_url``; return its URL."""
    import psycopg

    head, _, _ = server_url.rpartition("/")
    with psycopg.connect(head.replace("postgresql+psycopg", "postgresql") + "/postgres",
                         autocommit=True) as c:  # fmt: skip
        c.execute(f'CREATE DATABASE "{name}"')
    return f"{head}/{name}"
