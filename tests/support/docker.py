"""Helpers for tests that need Docker: skip reason, the image, containers cleaned up by id.

Docker tests are marked ``@pytest.mark.docker``; they skip with a visible reason when
``docker info`` fails. ``ensure_image()`` builds ``shardnet:latest`` with
``scripts/image/build_images.sh`` when it is missing or was built from other sources than the
tree's (label ``org.shardnet.source-digest``), so a current image costs nothing.
``SHARDNET_REBUILD_IMAGE=1`` forces the build.

A suite run that collects Docker tests starts that build at once in the background
(``start_background_build``, from tests/conftest.py, which also runs the Docker tests
last): the image builds while the other tests run, and ``ensure_image()`` waits for it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from scripts.image.digest import LABEL, source_digest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("SHARDNET_IMAGE", "shardnet:latest")
BUILD_TIMEOUT_S = 1800


@functools.cache
def docker_unavailable_reason() -> str | None:
    """Why Docker tests cannot run here, or None when ``docker info`` succeeds."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 60 s"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return f"`docker info` failed: {lines[-1] if lines else result.returncode}"
    return None


def require_docker() -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"Docker tests skipped: {reason}")


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def inspect_image(image: str = IMAGE) -> dict[str, Any] | None:
    result = docker("image", "inspect", image, check=False)
    if result.returncode != 0:
        return None
    info: dict[str, Any] = json.loads(result.stdout)[0]
    return info


def image_current(image: str = IMAGE) -> bool:
    """The image exists and was built from the tree's sources."""
    info = inspect_image(image)
    labels = ((info or {}).get("Config") or {}).get("Labels") or {}
    return info is not None and labels.get(LABEL) == source_digest()


def _forced() -> bool:
    return os.environ.get("SHARDNET_REBUILD_IMAGE") == "1"


def _build_command(image: str) -> tuple[list[str], dict[str, str]]:
    return (["bash", str(REPO / "scripts" / "image" / "build_images.sh")],
            {**os.environ, "SHARDNET_IMAGE": image})


class _Background:
    """The one build this test session started in the background, if any."""

    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    image: str = IMAGE
    returncode: int | None = None


def start_background_build(image: str = IMAGE) -> bool:
    """Start scripts/image/build_images.sh now, detached from the tests, when Docker works
    and the image is missing, stale or forced; True if it was started. Its output goes
    to a temporary log; ``ensure_image(image)`` waits for it."""
    if _Background.process is not None or docker_unavailable_reason() is not None:
        return False
    if image_current(image) and not _forced():
        return False
    command, env = _build_command(image)
    with tempfile.NamedTemporaryFile(prefix="shardnet-image-build-", suffix=".log",
                                     delete=False) as log:
        _Background.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        _Background.log = Path(log.name)
    _Background.image = image
    return True


def stop_background_build() -> None:
    """End of the session: stop a background build nobody waited for (its process group:
    the script and its docker client); remove its log."""
    process = _Background.process
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    if _Background.log is not None:
        _Background.log.unlink(missing_ok=True)


def _wait_background_build(image: str) -> int | None:
    """The exit status of this session's background build of ``image`` (waited for,
    bounded), or None when there was none."""
    process = _Background.process
    if process is None or _Background.image != image:
        return None
    if _Background.returncode is None:
        try:
            _Background.returncode = process.wait(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_background_build()
            pytest.fail(f"the background image build did not finish within {BUILD_TIMEOUT_S} s")
    return _Background.returncode


def ensure_image(image: str = IMAGE) -> str:
    """The image, built first when missing or older than the tree's sources (or, with
    SHARDNET_REBUILD_IMAGE=1, once per session). A build this session started in the
    background is waited for; should it have failed, the build runs again here and its
    failure is reported."""
    built_here = _wait_background_build(image) == 0
    if image_current(image) and (built_here or not _forced()):
        return image
    command, env = _build_command(image)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        pytest.fail(f"scripts/image/build_images.sh failed ({result.returncode}):\n{tail}")
    return image


@contextlib.contextmanager
def container(
    image: str, args: Sequence[str] = (), *, options: Sequence[str] = ()
) -> Iterator[str]:
    """Create a container and yield its id; it is removed (with its volumes) afterwards."""
    container_id = docker("create", *options, image, *args).stdout.strip()
    try:
        yield container_id
    finally:
        docker("rm", "--force", "--volumes", container_id, check=False)


@contextlib.contextmanager
def volume() -> Iterator[str]:
    """A fresh named volume, removed afterwards."""
    name = docker("volume", "create").stdout.strip()
    try:
        yield name
    finally:
        docker("volume", "rm", "--force", name, check=False)


def run_in_image(
    image: str,
    args: Sequence[str] = (),
    *,
    options: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a container to completion (``docker run`` without a container left behind)."""
    with container(image, args, options=options) as container_id:
        return docker("start", "--attach", container_id, timeout=timeout, check=False)
