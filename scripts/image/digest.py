"""A digest of the files the shardnet image is built from.

``scripts/image/build_images.sh`` stamps it on the image as the label
``org.shardnet.source-digest``; the Docker tests rebuild the image when the label differs
from the tree's digest, so they never test an image older than the code. Standard
library only (runs on the host before any virtualenv exists).

    python3 scripts/image/digest.py        # prints the hex digest of this tree
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

LABEL = "org.shardnet.source-digest"
ROOT = Path(__file__).resolve().parents[2]
FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md",
         # the compiled Ed25519 verifier, shipped as a wheel built from these
         "native/ed25519/Cargo.toml", "native/ed25519/Cargo.lock", "native/ed25519/src/lib.rs")
PACKAGES = ("consensus", "sharding", "node", "scripts")
# The image holds what the project's wheel ships: the packages' .py files (pyproject.toml
# declares no package data, tests/docker/test_image_tooling.py keeps it so). Other files
# there (scripts/project/costs.json, network.toml) are not in the image: editing them
# must not rebuild it. The build scripts of scripts/image/ count, as the Dockerfile does.
BUILD_SCRIPTS = "scripts/image"


def image_sources(root: Path = ROOT) -> list[Path]:
    """The files that end up in the image, in a stable order."""
    paths = [root / name for name in FILES if (root / name).is_file()]
    for package in PACKAGES:
        paths += sorted(
            path
            for path in (root / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and (path.suffix == ".py"
                 or path.relative_to(root).as_posix().startswith(BUILD_SCRIPTS + "/"))
        )
    return paths


def source_digest(root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for path in image_sources(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    print(source_digest(root))
