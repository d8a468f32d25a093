"""Stand-ins for the base images the stack uses, built from Debian packages where no registry is.

Each stand-in is tagged with the exact name the Dockerfile or docker-compose.yml uses, so both are
used unchanged; see README.md here for what each one stands in for and what it honours. They are
built only in the test's private engine (testkit/engine.py), from a `debootstrap --variant=minbase`
Debian root imported once, and reused while their recipe (the files of their directory, plus the
project's dependencies for the python one) is unchanged: the recipe's hash is a label.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

from testkit.engine import Engine

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LABEL = "org.ratesvc.standin"
RECIPE_LABEL = "org.ratesvc.standin.recipe"
# image name (as the Dockerfile / compose file spell it) -> what stands in for it
STANDINS = {
    "python:3.11-slim-bookworm": "Debian python3 3.11.2 + a wheelhouse",
    "redis:7.2-alpine": "Debian redis-server 7.0",
    "postgres:16-alpine": "Debian postgresql-15",
    "haproxy:2.8-alpine": "Debian haproxy 2.6",
    "prom/prometheus:v2.53.2": "Debian prometheus 2.42",
}
# image name -> its recipe directory here
RECIPES = {
    "python:3.11-slim-bookworm": "python",
    "redis:7.2-alpine": "redis",
    "postgres:16-alpine": "postgres",
    "haproxy:2.8-alpine": "haproxy",
    "prom/prometheus:v2.53.2": "prometheus",
}
# What the imported Debian root is; change it to rebuild every stand-in.
BASE_RECIPE = f"debootstrap --variant=minbase {SUITE}; policy-rc.d 101; v1"
BASE_REPO = "ratesvc-standin/debian-minbase"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBOOTSTRAP_TIMEOUT_S = 900.0
BUILD_TIMEOUT_S = 1200.0

Log = Callable[[str], None]


def debian_mirror() -> str:
    """RATESVC_STANDIN_MIRROR, else the Debian mirror this machine's apt sources name."""
    if os.environ.get("RATESVC_STANDIN_MIRROR"):
        return os.environ["RATESVC_STANDIN_MIRROR"]
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
            if SUITE in fields.get("Suites", "").split() and "security" not in fields.get(
                "URIs", ""
            ):
                return fields.get("URIs", DEFAULT_MIRROR).split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                return parts[1]
    return DEFAULT_MIRROR


def requirements(pyproject: Path) -> str:
    """The project's build requirements and dependencies, one per line (the wheelhouse's input)."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    wanted = [*data["build-system"]["requires"], *data["project"]["dependencies"]]
    return "".join(f"{line}\n" for line in sorted(wanted))


def _digest(*parts: bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(hashlib.sha256(part).digest())
    return sha.hexdigest()[:16]


def base_hash() -> str:
    """The hash of the Debian root's recipe."""
    return _digest(BASE_RECIPE.encode())


def recipe_hash(directory: str, extra: str = "") -> str:
    """Hash of a stand-in's recipe: its files, the base's recipe and `extra` (requirements)."""
    folder = HERE / directory
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return _digest(
        base_hash().encode(),
        *(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes() for p in files),
        extra.encode(),
    )


def image_labels(engine: Engine, image: str) -> dict[str, str] | None:
    """The image's labels ({} when it has none), or None when the engine does not have it."""
    result = engine.run(
        "image", "inspect", "--format", "{{json .Config.Labels}}", image, check=False
    )
    if result.returncode != 0:
        return None
    text = result.stdout.decode().strip()
    return {} if text in ("", "null") else dict(json.loads(text))


def is_real(engine: Engine, image: str) -> bool:
    """The engine has `image` and it is not one of our stand-ins."""
    labels = image_labels(engine, image)
    return labels is not None and LABEL not in labels


def try_pull(engine: Engine, image: str, *, timeout_s: float = 600.0) -> bool:
    """Pull the real `image` (a registry is reachable) and say whether the engine now has it."""
    if is_real(engine, image):
        return True
    try:
        engine.run("pull", "--quiet", image, timeout_s=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False
    return is_real(engine, image)


class StandinBuilder:
    """Builds (or reuses) stand-ins in a private engine; `ensure` says which were built."""

    def __init__(self, engine: Engine, *, project_root: Path, log: Log = print) -> None:
        if not engine.private:
            raise RuntimeError("stand-ins are built only in the test's private engine")
        self.engine, self.log = engine, log
        self.requirements = requirements(project_root / "pyproject.toml")

    def recipe(self, image: str) -> str:
        """The recipe hash `image` must carry to be reused."""
        directory = RECIPES[image]
        return recipe_hash(directory, self.requirements if directory == "python" else "")

    def current(self, image: str) -> bool:
        """The engine holds a stand-in for `image` built from today's recipe."""
        labels = image_labels(self.engine, image) or {}
        return labels.get(RECIPE_LABEL) == self.recipe(image)

    def ensure(self, images: Iterable[str]) -> dict[str, str]:
        """Each image -> "reused" or "built"."""
        outcome = {}
        for image in images:
            if self.current(image):
                outcome[image] = "reused"
                continue
            self.build(image, base=self.base())
            outcome[image] = "built"
        return outcome

    def base(self) -> str:
        """The imported Debian root's tag, imported first if the engine lacks it."""
        tag = f"{BASE_REPO}:{base_hash()}"
        if image_labels(self.engine, tag) is not None:
            return tag
        mirror = debian_mirror()
        self.log(f"stand-ins: debootstrap --variant=minbase {SUITE} from {mirror}")
        with tempfile.TemporaryDirectory(prefix="standin-root-") as tmp:
            root = Path(tmp) / "root"
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", SUITE, str(root), mirror],
                capture_output=True,
                text=True,
                timeout=DEBOOTSTRAP_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"debootstrap failed:\n{(result.stdout + result.stderr)[-3000:]}"
                )
            # As Docker's Debian images: packages installed in a build never start services.
            policy = root / "usr/sbin/policy-rc.d"
            policy.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
            policy.chmod(0o755)
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            (root / "var/cache/apt/archives/partial").mkdir(parents=True)
            tar = subprocess.run(
                ["tar", "-C", str(root), "-c", "."], capture_output=True, check=True
            )
            self.engine.run(
                "import",
                "--change",
                f"ENV {PATH_ENV}",
                "--change",
                'CMD ["bash"]',
                "-",
                tag,
                input_bytes=tar.stdout,
                timeout_s=BUILD_TIMEOUT_S,
            )
        return tag

    def build(self, image: str, *, base: str) -> None:
        """`docker build` the stand-in for `image` on `base`, tagged `image` (host network: apt)."""
        directory = RECIPES[image]
        recipe = self.recipe(image)
        self.log(f"stand-ins: building {image} ({directory}, recipe {recipe})")
        with tempfile.TemporaryDirectory(prefix="standin-ctx-") as tmp:
            context = Path(tmp) / directory
            shutil.copytree(HERE / directory, context)
            tags = [image, f"ratesvc-standin/{directory}:{recipe}"]
            if directory == "python":
                interpreter = f"ratesvc-standin/python-interpreter:{recipe}"
                self._docker_build(context, base=base, recipe=recipe, tags=[interpreter])
                self._wheelhouse(interpreter, context)
                self._docker_build(
                    context,
                    base=interpreter,
                    recipe=recipe,
                    tags=tags,
                    dockerfile="wheelhouse.Dockerfile",
                )
            else:
                self._docker_build(context, base=base, recipe=recipe, tags=tags)

    def _docker_build(
        self,
        context: Path,
        *,
        base: str,
        recipe: str,
        tags: list[str],
        dockerfile: str = "Dockerfile",
    ) -> None:
        tag_args = [arg for tag in tags for arg in ("--tag", tag)]
        self.engine.run(
            "build",
            "--network",
            "host",
            "--file",
            str(context / dockerfile),
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            f"RECIPE={recipe}",
            *tag_args,
            str(context),
            timeout_s=BUILD_TIMEOUT_S,
        )

    def _wheelhouse(self, interpreter: str, context: Path) -> None:
        """`pip wheel` the requirements into context/wheelhouse, run by the stand-in's python.

        Runs on the host's network with the host's certificate bundle and index settings, as
        this machine's own pip would (a proxy or mirror that re-signs TLS included).
        """
        (context / "wheelhouse").mkdir()
        (context / "requirements.txt").write_text(self.requirements, encoding="utf-8")
        env_args = []
        for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
            value = os.environ.get(name, "")
            if value and "file:" not in value:
                env_args += ["--env", f"{name}={value}"]
        mounts = [
            "--volume",
            f"{context / 'wheelhouse'}:/wheelhouse",
            "--volume",
            f"{context / 'requirements.txt'}:/requirements.txt:ro",
        ]
        bundle = host_ca_bundle()
        if bundle:
            mounts += ["--volume", f"{bundle}:/host-ca.crt:ro", "--env", "PIP_CERT=/host-ca.crt"]
        self.engine.run(
            "run",
            "--rm",
            "--network",
            "host",
            *mounts,
            *env_args,
            interpreter,
            "sh",
            "-c",
            "python -m venv /tmp/pip && /tmp/pip/bin/pip wheel --quiet --no-cache-dir"
            " --disable-pip-version-check --wheel-dir /wheelhouse -r /requirements.txt",
            timeout_s=BUILD_TIMEOUT_S,
        )


def host_ca_bundle() -> str | None:
    """The certificate bundle this machine's pip trusts (PIP_CERT, SSL_CERT_FILE, Debian's)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    return None
