"""The node's validator key file (``node_key.json`` in the node home)."""

from __future__ import annotations

import json
from pathlib import Path

from consensus.kernel.crypto import KeyPair
from node.config import ConfigError


def write_node_key(path: Path, key: KeyPair) -> None:
    path.write_text(json.dumps({"public_key": key.public_key.hex(),
                                "private_key": key.private_bytes.hex()}, indent=2) + "\n")
    path.chmod(0o600)


def load_node_key(path: Path) -> KeyPair:
    try:
        doc = json.loads(path.read_text())
        private = bytes.fromhex(doc["private_key"])
    except OSError as exc:
        raise ConfigError(f"cannot read node key {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: private_key: {exc}") from None
    if len(private) != 32:
        raise ConfigError(f"{path}: private_key must be 32 bytes")
    key = KeyPair(private)
    if "public_key" in doc and doc["public_key"] != key.public_key.hex():
        raise ConfigError(f"{path}: public_key does not match private_key")
    return key
