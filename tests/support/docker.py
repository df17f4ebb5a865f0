"""Helpers for tests that need Docker: skip reason, the image, containers cleaned up by id.

Docker tests are marked ``@pytest.mark.docker``; they skip with a visible reason when
``docker info`` fails. ``ensure_image()`` builds ``shardnet:latest`` with
``scripts/image/build_images.sh`` when it is missing or was built from other sources than the
tree's (label ``org.shardnet.source-digest``), so a current image costs nothing.
``SHARDNET_REBUILD_IMAGE=1`` forces the build.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
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


def ensure_image(image: str = IMAGE) -> str:
    """The image, built first when missing or older than the tree's sources."""
    info = inspect_image(image)
    labels = ((info or {}).get("Config") or {}).get("Labels") or {}
    current = labels.get(LABEL) == source_digest()
    if info is not None and current and os.environ.get("SHARDNET_REBUILD_IMAGE") != "1":
        return image
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "image" / "build_images.sh")],
        cwd=REPO,
        env={**os.environ, "SHARDNET_IMAGE": image},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
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
