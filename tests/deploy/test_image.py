"""The image's recipe without a Docker engine: the Dockerfile's wheel, installed apart from the
source tree, runs `ratesvc migrate` from a working directory holding only `aerich_migrations/`
(the runtime stage's /app)."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.native import ROOT, SRC, run

pytestmark = pytest.mark.integration


@pytest.fixture(name="installed", scope="module")
def installed_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(wheel, site directory with the wheel installed, an /app-like working directory)."""
    base = tmp_path_factory.mktemp("image")
    built = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "wheels"), "."],
        cwd=ROOT,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (base / "wheels").glob("ratesvc-*.whl")
    site = base / "site"
    installed = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    app = base / "app"
    app.mkdir()
    shutil.copytree(ROOT / "aerich_migrations", app / "aerich_migrations")
    return wheel, site, app


def image_env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return env | {"PYTHONPATH": str(site)} | extra


def test_wheel_holds_every_package_of_the_source_tree(installed):
    wheel, _site, _app = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for init in SRC.rglob("__init__.py"):
        relative = init.relative_to(SRC.parent).as_posix()
        assert relative in names, f"{relative} missing from the wheel"


def test_installed_wheel_finds_migrations_in_the_working_directory(installed):
    _wheel, site, app = installed
    probe = run(
        [
            sys.executable,
            "-c",
            "import ratesvc.store.db as d; print(d.__file__); print(d.migrations_dir())",
        ],
        cwd=app,
        env=image_env(site),
    )
    assert probe.returncode == 0, probe.stderr
    module, migrations = probe.stdout.split()
    assert Path(module).is_relative_to(site), "the wheel, not the source tree, is imported"
    assert Path(migrations) == app / "aerich_migrations"


def test_installed_wheel_applies_the_migrations(installed, database_url):
    _wheel, site, app = installed
    migrate = run(
        [sys.executable, "-m", "ratesvc", "migrate"],
        cwd=app,
        env=image_env(site, DATABASE_URL=database_url, LOG_LEVEL="INFO"),
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "migrations applied" in migrate.stdout + migrate.stderr
