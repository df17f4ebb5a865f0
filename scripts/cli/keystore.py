"""A local keystore of Ed25519 account keys, one JSON file per key (issue 17).

``DIR/<name>.json``, owner-only (0600) in an owner-only folder (0700). DIR is
``--keystore``, else ``$SHARDNET_KEYSTORE``, else ``~/.shardnet/keystore``.

A file holds the key in plain hex (acceptable for a testnet: anyone who can read the
file holds the account) or, with a password, encrypted: scrypt derives a 256-bit key
from the password and a random salt, AES-256-GCM seals the private key with a random
nonce and the address as associated data, so a wrong password or an edited file fails
the tag check instead of giving another key. Both from ``cryptography``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from consensus.kernel.crypto import KeyPair
from scripts.cli.exits import UsageFailure

KEYSTORE_ENV = "SHARDNET_KEYSTORE"
FORMAT_VERSION = 1
PRIVATE_KEY_BYTES = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
# scrypt cost: 2**15 x 8 = 32 MiB and ~0.1 s per unlock, above the 2**14 that
# cryptography's documentation gives for interactive logins.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SALT_BYTES, NONCE_BYTES = 16, 12
# A file asking for more (1 GiB at n = 2**20, r = 8) is refused before scrypt runs.
SCRYPT_N_MAX, SCRYPT_R_MAX, SCRYPT_P_MAX = 2**20, 16, 16


def default_keystore() -> Path:
    env = os.environ.get(KEYSTORE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".shardnet" / "keystore"


def parse_private_key(text: str, what: str = "private key") -> KeyPair:
    """A key pair from 64 hex digits (``0x`` allowed); the error never echoes the text."""
    cleaned = text.strip().removeprefix("0x")
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError:
        raise UsageFailure(f"{what} is not hex: give 64 hex digits (32 bytes)") from None
    if len(raw) != PRIVATE_KEY_BYTES:
        raise UsageFailure(f"{what} is {len(raw)} bytes: give 64 hex digits (32 bytes)")
    return KeyPair(raw)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UsageFailure(f"key name {name!r}: use 1-64 letters, digits, '_', '-' or '.' "
                           "(not starting with '.' or '-')")
    return name


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password)


def encrypt_key(key: KeyPair, password: bytes) -> dict[str, Any]:
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    sealed = AESGCM(_derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
        nonce, key.private_bytes, key.public_key)
    return {"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt.hex(),
            "cipher": "aes-256-gcm", "nonce": nonce.hex(), "ciphertext": sealed.hex()}


@dataclass(frozen=True, slots=True)
class StoredKey:
    name: str
    path: Path
    address: bytes
    document: dict[str, Any]

    @property
    def encrypted(self) -> bool:
        return "crypto" in self.document

    def unlock(self, password: bytes | None) -> KeyPair:
        """The key pair; ``password`` for an encrypted file (a wrong one: exit 2)."""
        if not self.encrypted:
            key = parse_private_key(str(self.document.get("private_key", "")),
                                    f"the key in {self.path}")
        else:
            if password is None:
                raise UsageFailure(f"{self.path} is encrypted: give --password-file")
            crypto = self.document["crypto"]
            try:
                n, r, p = int(crypto["n"]), int(crypto["r"]), int(crypto["p"])
                if not (n <= SCRYPT_N_MAX and r <= SCRYPT_R_MAX and p <= SCRYPT_P_MAX):
                    raise ValueError(f"scrypt cost n={n} r={r} p={p} above the bounds")
                secret = _derive(password, bytes.fromhex(crypto["salt"]), n, r, p)
                raw = AESGCM(secret).decrypt(bytes.fromhex(crypto["nonce"]),
                                             bytes.fromhex(crypto["ciphertext"]), self.address)
            except InvalidTag:
                raise UsageFailure(f"wrong password for {self.path} (or the file was "
                                   "edited)") from None
            except (KeyError, TypeError, ValueError) as exc:
                raise UsageFailure(f"{self.path}: not a shardnet key file ({exc})") from None
            key = KeyPair(raw)
        if key.public_key != self.address:
            raise UsageFailure(f"{self.path}: the key does not match its address")
        return key


def read_key_file(path: Path) -> StoredKey:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageFailure(f"key file {path} not found") from None
    except OSError as exc:
        raise UsageFailure(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        # A bare hex private key (as ``shardnet keys --index N`` prints it).
        key = parse_private_key(text, f"the key in {path}")
        return StoredKey(path.stem, path, key.public_key,
                         {"private_key": key.private_bytes.hex()})
    try:
        address = bytes.fromhex(str(document["address"]))
    except (KeyError, ValueError):
        raise UsageFailure(f"{path}: not a shardnet key file (no address)") from None
    return StoredKey(str(document.get("name", path.stem)), path, address, document)


class Keystore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def require(self) -> None:
        if not self.root.is_dir():
            raise UsageFailure(f"no keystore at {self.root}: create a key with "
                               "`shardnet keys new` or `keys import`, or give --keystore")

    def add(self, key: KeyPair, name: str, password: bytes | None) -> StoredKey:
        path = self.path(name)
        for other in self.list():
            if other.address == key.public_key:
                raise UsageFailure(f"address {key.public_key.hex()} is already in the "
                                   f"keystore as {other.name!r}")
        document: dict[str, Any] = {"version": FORMAT_VERSION, "name": name,
                                    "address": key.public_key.hex()}
        if password is None:
            document["private_key"] = key.private_bytes.hex()
        else:
            document["crypto"] = encrypt_key(key, password)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageFailure(f"a key named {name!r} exists already ({path}): "
                               "choose another --name") from None
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(document, indent=2) + "\n")
        return StoredKey(name, path, key.public_key, document)

    def get(self, name: str) -> StoredKey:
        path = self.path(name)
        self.require()
        if not path.is_file():
            known = ", ".join(k.name for k in self.list()) or "none"
            raise UsageFailure(f"no key named {name!r} in {self.root} (known: {known})")
        return read_key_file(path)

    def list(self) -> list[StoredKey]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*.json")):
            try:
                found.append(read_key_file(path))
            except UsageFailure:
                continue  # not a key file: `keys list` shows the keys it can read
        return found
