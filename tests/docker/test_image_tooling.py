"""The pieces of the offline image build that need no Docker: apt mirror discovery, the
choice of Compose command, the source digest, and the Dockerfile's contract."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.cli import compose
from scripts.image import apt_mirror
from scripts.image import digest as image_digest

REPO = Path(__file__).resolve().parents[2]

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    write(tmp_path, "etc/apt/sources.list.d/debian.sources", DEB822)
    assert apt_mirror.pick_mirror(apt_mirror.read_sources(tmp_path), "bookworm") == (
        "http://deb.debian.org/debian"
    )


def test_mirror_from_one_line_sources_with_options(tmp_path: Path) -> None:
    write(
        tmp_path,
        "etc/apt/sources.list",
        "# local mirror\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [ arch=amd64 signed-by=/k.gpg ] http://mirror.example/debian bookworm main\n",
    )
    assert apt_mirror.pick_mirror(apt_mirror.read_sources(tmp_path), "bookworm") == (
        "http://mirror.example/debian"
    )


def test_mirror_skips_disabled_and_foreign_sources(tmp_path: Path) -> None:
    write(
        tmp_path,
        "etc/apt/sources.list.d/a.sources",
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n",
    )
    write(
        tmp_path,
        "etc/apt/sources.list.d/b.list.disabled",
        "deb http://x.example/debian bookworm main\n",
    )
    write(
        tmp_path,
        "etc/apt/sources.list.d/c.list",
        "deb http://ftp.example.org/debian/ trixie main\n",
    )
    sources = apt_mirror.read_sources(tmp_path)
    assert [s.uri for s in sources] == [
        "http://ftp.example.org/debian/",
        "https://deb.nodesource.com/node_20.x",
    ]
    # No source for bookworm itself: any Debian archive serves, never the security one.
    assert apt_mirror.pick_mirror(sources, "bookworm") == "http://ftp.example.org/debian/"


def test_no_mirror_is_an_error_not_a_default(tmp_path: Path) -> None:
    write(tmp_path, "etc/apt/sources.list", "deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert apt_mirror.main(["--root", str(tmp_path)]) == 1


def test_this_machines_mirror_is_found() -> None:
    if not any(Path("/etc/apt").glob("sources.list*")):
        pytest.skip("no apt sources on this machine")
    result = subprocess.run(
        ["python3", str(REPO / "scripts" / "image" / "apt_mirror.py")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert re.match(r"^(https?|ftp|file):", result.stdout.strip())


@pytest.fixture
def fresh_compose_choice() -> Iterator[None]:
    compose.compose_command.cache_clear()
    yield
    compose.compose_command.cache_clear()


@pytest.mark.parametrize(
    ("working", "expected"),
    [
        ({"docker compose", "docker-compose"}, ("docker", "compose")),
        ({"docker-compose"}, ("docker-compose",)),
        ({"docker compose"}, ("docker", "compose")),
    ],
)
def test_compose_prefers_the_plugin_and_falls_back_to_v1(
    monkeypatch: pytest.MonkeyPatch,
    fresh_compose_choice: None,
    working: set[str],
    expected: tuple[str, ...],
) -> None:
    monkeypatch.delenv("SHARDNET_COMPOSE", raising=False)
    monkeypatch.setattr(compose, "_works", lambda command: " ".join(command) in working)
    assert compose.compose_command() == expected


def test_compose_missing_says_what_was_tried(
    monkeypatch: pytest.MonkeyPatch, fresh_compose_choice: None
) -> None:
    monkeypatch.delenv("SHARDNET_COMPOSE", raising=False)
    monkeypatch.setattr(compose, "_works", lambda command: False)
    assert not compose.compose_available()
    with pytest.raises(compose.ComposeNotFound, match="docker compose or docker-compose"):
        compose.compose_command()


def test_compose_override(monkeypatch: pytest.MonkeyPatch, fresh_compose_choice: None) -> None:
    monkeypatch.setenv("SHARDNET_COMPOSE", "docker-compose")
    monkeypatch.setattr(compose, "_works", lambda command: command == ["docker-compose"])
    assert compose.compose_command() == ("docker-compose",)


def test_source_digest_follows_the_image_sources(tmp_path: Path) -> None:
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        write(tmp_path, name, name)
    write(tmp_path, "scripts/cli/main.py", "a")
    write(tmp_path, "node/__pycache__/cli.cpython-311.pyc", "compiled")
    first = image_digest.source_digest(tmp_path)
    write(tmp_path, "node/__pycache__/cli.cpython-311.pyc", "recompiled")
    write(tmp_path, "tests/test_x.py", "not in the image")
    assert image_digest.source_digest(tmp_path) == first
    write(tmp_path, "scripts/cli/main.py", "b")
    assert image_digest.source_digest(tmp_path) != first
    second = image_digest.source_digest(tmp_path)
    write(tmp_path, "native/ed25519/src/lib.rs", "the compiled verifier's wheel")
    assert image_digest.source_digest(tmp_path) != second
    # A package's data file is not in the wheel, so not in the image: no rebuild for it.
    third = image_digest.source_digest(tmp_path)
    write(tmp_path, "scripts/project/costs.json", "{}")
    assert image_digest.source_digest(tmp_path) == third
    # The build scripts decide how the image is built: they count.
    write(tmp_path, "scripts/image/build_images.sh", "#!/bin/sh")
    assert image_digest.source_digest(tmp_path) != third


def test_the_wheel_ships_only_python_files_as_the_digest_assumes() -> None:
    """The digest leaves the packages' other files out because the wheel (the image's
    /opt/shardnet) does not ship them: no package data, no MANIFEST.in, no SCM plugin."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project.get("tool", {}).get("setuptools", {})
    assert not {"package-data", "include-package-data", "data-files"} & set(setuptools)
    assert not (REPO / "MANIFEST.in").exists()
    assert not any("scm" in req for req in project["build-system"]["requires"])


def test_dockerfile_contract() -> None:
    """What users, the compose generator and the offline build rely on."""
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert "--no-index --find-links" in text and "wheelhouse*" in text
    assert re.search(r"^USER shardnet", text, re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*\\\n.*$", text, re.M)
    assert healthcheck is not None
    assert "API_PORT" in healthcheck[0] and "/v1/health" in healthcheck[0]
    assert 'ENTRYPOINT ["shardnet"]' in text and 'CMD ["node", "--home", "/data"]' in text
    assert re.search(r"^VOLUME /data$", text, re.M)
    # Context stays small: no virtualenv, git history or tests go to the daemon.
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", "tests"} <= set(ignored)
    assert not {"wheelhouse", "wheelhouse/"} & set(ignored), "the build copies wheelhouse/"


# -- the suite's background image build (tests/support/docker.py, tests/conftest.py) ----


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """build_images.sh replaced by a script that appends a line to ``builds``; the image
    is current once that file exists; no background build left from the session."""
    from tests.support import docker as support

    builds = tmp_path / "builds"
    monkeypatch.setattr(support, "docker_unavailable_reason", lambda: None)
    monkeypatch.setattr(support, "image_current", lambda image=support.IMAGE: builds.exists())
    monkeypatch.setattr(support, "_forced", lambda: False)
    for name, value in (("process", None), ("log", None), ("returncode", None)):
        monkeypatch.setattr(support._Background, name, value)
    yield builds
    support.stop_background_build()


def test_background_build_is_waited_for_and_not_repeated(
        monkeypatch: pytest.MonkeyPatch, fake_build: Path) -> None:
    from tests.support import docker as support

    monkeypatch.setattr(support, "_build_command", lambda image: (
        ["bash", "-c", f"sleep 0.3; echo built >> {fake_build}"], {}))
    assert support.start_background_build() is True
    assert support.start_background_build() is False  # one per session
    assert not fake_build.exists()  # still building: ensure_image must wait for it
    assert support.ensure_image() == support.IMAGE
    assert support._Background.process is not None
    assert support._Background.process.poll() == 0  # ensure_image waited for it ...
    assert fake_build.read_text() == "built\n"  # ... and did not build a second time


def test_failed_background_build_runs_again_and_is_reported(
        monkeypatch: pytest.MonkeyPatch, fake_build: Path) -> None:
    from tests.support import docker as support

    monkeypatch.setattr(support, "_build_command", lambda image: (
        ["bash", "-c", f"echo attempt >> {fake_build}.tries; echo broken base; exit 3"], {}))
    assert support.start_background_build() is True
    with pytest.raises(pytest.fail.Exception, match=r"failed \(3\):\nbroken base"):
        support.ensure_image()
    assert Path(f"{fake_build}.tries").read_text() == "attempt\nattempt\n"


def test_docker_tests_are_ordered_last_keeping_each_groups_order() -> None:
    from tests import conftest

    class Item:
        def __init__(self, name: str, docker: bool) -> None:
            self.name, self.docker = name, docker

        def get_closest_marker(self, name: str) -> object | None:
            return object() if name == "docker" and self.docker else None

    class Config:
        class option:  # pytest's attribute name
            collectonly = True  # collection only: no build started

    items = [Item("a", False), Item("d1", True), Item("b", False), Item("d2", True),
             Item("c", False)]
    conftest.pytest_collection_modifyitems(Config(), items)  # type: ignore[arg-type]
    assert [item.name for item in items] == ["a", "b", "c", "d1", "d2"]
