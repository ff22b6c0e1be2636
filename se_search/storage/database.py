"""Database plumbing shared by every table: engines with errors that name the fix, one
transaction per unit of work, retries when concurrent writers collide, and URLs shown
without their passwords."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session, sessionmaker

from se_search.errors import SESearchError

__all__ = [
    "StorageError",
    "check_sqlite_file",
    "open_engine",
    "redact",
    "retry_racing",
    "serialize_sqlite",
    "sqlite_busy_timeout",
    "transaction",
    "without_password",
]


class StorageError(SESearchError):
    """A database that cannot be opened or does not hold what was asked for."""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def without_password(url: str) -> str:
    """``url`` with no password at all: what may be written to disk. A connection on it
    takes the password from the driver's own sources (PostgreSQL: ``PGPASSWORD``,
    ``~/.pgpass``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return redact(url)
    return parsed._replace(password=None).render_as_string(hide_password=False)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory SQLite."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database)


def check_sqlite_file(url: str) -> None:
    """Refuse, naming the path and the fix, a SQLite URL whose file cannot be opened or
    created (a directory, a missing folder, no permission): SQLite itself only says "unable
    to open database file", from deep inside the first query."""
    path = sqlite_file(url)
    if path is None:
        return
    folder = path.parent
    if path.is_dir():
        example = f"sqlite:///{path / 'se_search.db'}"
        problem = f"{path} is a directory; name a database file in it, e.g. {example}"
    elif not folder.is_dir():
        problem = (
            f"the folder {folder} does not exist; create it (mkdir -p {folder}) or name a "
            "file in a folder that exists"
        )
    elif path.exists() and not os.access(path, os.R_OK | os.W_OK):
        problem = f"{path} cannot be read and written; fix its permissions or use another file"
    elif not path.exists() and not os.access(folder, os.W_OK | os.X_OK):
        problem = (
            f"{path} cannot be created in {folder}, which is not writable; use another folder"
        )
    else:
        return
    raise StorageError(f"storage {redact(url)!r}: {problem}")


def sqlite_busy_timeout(url: str) -> dict[str, Any]:
    """Engine arguments that make SQLite wait for a lock instead of failing at once."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def serialize_sqlite(engine: Engine, *, writes: bool = True) -> Engine:
    """On SQLite, make each of ``engine``'s transactions take the write lock when it begins
    (unless the engine only reads: ``writes=False``).

    Python's sqlite3 driver begins a transaction only at the first write, so a read and
    the write that depends on it are not atomic: two processes could both read a WAITING
    Optuna trial and both set it RUNNING, and run it twice (``SELECT ... FOR UPDATE`` does
    nothing on SQLite). ``BEGIN IMMEDIATE`` serializes transactions instead; a writer waits
    for the lock (``busy_timeout``) rather than failing. WAL lets readers outside a
    transaction go on meanwhile. Connections already pooled are dropped so that every one
    is set up this way. Other databases are left alone.
    """
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        if writes:
            dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    if writes:

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()
    return engine


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """A SQLAlchemy engine for ``url``, with errors that name the fix (and no password);
    on SQLite, with serialized transactions unless ``read_only``."""
    shown = redact(url)
    if not read_only:  # a read-only open refuses a missing file itself, and creates none
        check_sqlite_file(url)
    try:
        make_url(url)
        engine = create_engine(url, **sqlite_busy_timeout(url))
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise StorageError(
            f"storage {shown!r} is not a database URL SQLAlchemy can open ({err}); use "
            "sqlite:///se_search.db or postgresql+psycopg://USER@HOST/DB"
        ) from None
    except ImportError as err:
        raise StorageError(
            f"storage {shown!r} needs a database driver that is not installed ({err.name}); "
            "install it (e.g. pip install 'psycopg[binary]')"
        ) from None
    return serialize_sqlite(engine, writes=not read_only)


@contextmanager
def transaction(sessions: sessionmaker) -> Iterator[Session]:
    """A session from ``sessions`` as one transaction: committed on success, rolled back on
    any error, closed either way."""
    session = sessions()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def retry_racing(action: Callable[[], Any], attempts: int = 5) -> Any:
    """Run ``action``, again when a concurrent writer made it collide.

    Two processes on one study may both create the tables (ours or Optuna's), or both
    replace the front, at once; the loser of such a race gets an integrity, programming
    or operational error. Each attempt is one whole transaction.
    """
    for attempt in range(attempts):
        try:
            return action()
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None
