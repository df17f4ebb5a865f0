"""Deterministic test doubles for the simulator, tests and benchmarks.

- ``FastSigner`` / ``FastVerifier``: a keyed-hash "signature" (NOT secure: the
  verifier holds every secret) that runs thousands of seeds in seconds; the same
  replica code runs with real Ed25519 (``crypto.KeyPair`` + ``verify_signature``).
- ``TestLedger``: the ledger interface the node's ledger also offers (build a block on
  the committed tip, execute speculatively, commit with a certificate). A block is an
  encoded list of integer ops; the "state root" is a hash chain over them. It checks
  what execute-then-vote needs: payload hashes to the block hash, height, prev hash
  and header view fit, no op committed twice, and the header's state root matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from consensus.certificate import GENESIS_HASH, CommitCertificate, Verifier
from consensus.kernel.codec import WireStruct, decode, encode
from consensus.kernel.crypto import (
    TAG_BLOCK_HEADER,
    TAG_KEY_DERIVATION,
    TAG_STATE,
    KeyPair,
    sha256,
    tagged_hash,
    verify_signature,
)
from consensus.kernel.errors import DecodeError, InvariantViolation
from consensus.kernel.limits import TEST_BLOCK_BYTES_MAX
from consensus.state import Signer


class FastSigner:
    __slots__ = ("_secret", "public_key")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.public_key = tagged_hash(TAG_KEY_DERIVATION, b"fast-signer", secret)

    def sign(self, message: bytes) -> bytes:
        return sha256(self._secret + message) + sha256(message + self._secret)


class FastVerifier:
    """Checks ``FastSigner`` signatures of known keys; never raises."""

    def __init__(self, signers: Sequence[FastSigner]) -> None:
        self._secrets = {s.public_key: s._secret for s in signers}

    def __call__(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(bytes(public_key))
        if secret is None or len(signature) != 64:
            return False
        return bool(signature == sha256(secret + message) + sha256(message + secret))


def make_keys(n: int, seed: str, real: bool = False) -> tuple[list[Signer], Verifier]:
    """``n`` validator signers and the matching verifier."""
    if real:
        return [KeyPair.derive(seed, i) for i in range(n)], verify_signature
    fast = [FastSigner(f"{seed}/{i}".encode()) for i in range(n)]
    return list(fast), FastVerifier(fast)


class TestHeader(WireStruct, frozen=True):
    height: int
    view: int
    prev_hash: bytes
    proposer: int
    ops_hash: bytes
    state_root: bytes


class TestBlock(WireStruct, frozen=True):
    header: TestHeader
    ops: tuple[int, ...]


def header_hash(header: TestHeader) -> bytes:
    return tagged_hash(TAG_BLOCK_HEADER, encode(header))


def next_root(root: bytes, ops: Sequence[int]) -> bytes:
    return tagged_hash(TAG_STATE, root, encode(list(ops)))


def make_block(
    height: int, view: int, prev_hash: bytes, proposer: int, ops: Sequence[int], root: bytes
) -> tuple[bytes, bytes]:
    """(payload, block_hash) of a block carrying ``ops`` whose header claims ``root``."""
    ops_t = tuple(ops)
    header = TestHeader(height, view, prev_hash, proposer, sha256(encode(list(ops_t))), root)
    return encode(TestBlock(header, ops_t)), header_hash(header)


@dataclass
class TestLedger:
    """One replica's ledger: committed chain plus speculative execution results.

    A speculative result may sit on another one (pipelining, ``pipeline_depth`` > 1):
    ``execute`` and ``build`` take the parent block, which is the committed tip or a
    block this ledger executed (or built) at the height below."""

    committed_height: int = 0
    committed_hash: bytes = GENESIS_HASH
    state_root: bytes = GENESIS_HASH
    committed_ops: set[int] = field(default_factory=set)
    blocks: list[tuple[bytes, bytes, CommitCertificate]] = field(default_factory=list)
    # block hash -> (height, state root after it, its ops, its parent)
    speculative: dict[bytes, tuple[int, bytes, tuple[int, ...], bytes]] = field(
        default_factory=dict
    )

    def _on(self, parent: bytes | None, height: int) -> tuple[bytes, bytes, set[int]] | None:
        """(parent hash, state root, ops in flight above the committed tip) that a
        block at ``height`` on ``parent`` executes on, or None when unknown."""
        if parent is None or parent == b"":
            parent = self.committed_hash
        if parent == self.committed_hash:
            return (parent, self.state_root, set()) if height == self.committed_height + 1 else None
        held = self.speculative.get(parent)
        if held is None or held[0] != height - 1:
            return None
        below = self._on(held[3], height - 1)
        if below is None:
            return None
        return parent, held[1], below[2] | set(held[2])

    def chain_ops(self, parent: bytes | None, height: int) -> set[int]:
        """Ops in the uncommitted blocks up to ``parent`` (a proposal leaves them out)."""
        base = self._on(parent, height)
        return set() if base is None else base[2]

    def build(
        self, height: int, view: int, proposer: int, ops: Sequence[int],
        parent: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        base = self._on(parent, height)
        if base is None:
            raise InvariantViolation(f"no parent to build height {height} on")
        prev, prev_root, in_flight = base
        fresh = sorted({op for op in ops if op not in self.committed_ops | in_flight})
        root = next_root(prev_root, fresh)
        payload, block_hash = make_block(height, view, prev, proposer, fresh, root)
        self.speculative[block_hash] = (height, root, tuple(fresh), prev)
        return payload, block_hash

    def execute(
        self, view: int, height: int, payload: bytes, block_hash: bytes,
        parent: bytes | None = None,
    ) -> tuple[bool, str]:
        try:
            block = decode(payload, TestBlock, TEST_BLOCK_BYTES_MAX)
        except DecodeError as exc:
            return False, exc.reason
        header = block.header
        if header_hash(header) != block_hash:
            return False, "hash_mismatch"
        base = self._on(parent, height)
        if header.height != height or base is None:
            return False, "wrong_height"
        prev, prev_root, in_flight = base
        if header.prev_hash != prev:
            return False, "wrong_prev_hash"
        if header.view > view:
            return False, "wrong_view"
        if header.ops_hash != sha256(encode(list(block.ops))):
            return False, "wrong_ops_hash"
        ops = set(block.ops)
        if len(ops) != len(block.ops) or ops & (self.committed_ops | in_flight):
            return False, "duplicate_op"
        root = next_root(prev_root, block.ops)
        if root != header.state_root:
            return False, "state_root_mismatch"
        self.speculative[block_hash] = (height, root, block.ops, prev)
        return True, ""

    def commit(
        self, height: int, view: int, payload: bytes, block_hash: bytes, cert: CommitCertificate
    ) -> tuple[int, ...]:
        if block_hash not in self.speculative:
            ok, reason = self.execute(view, height, payload, block_hash)
            if not ok:
                raise InvariantViolation(f"certified block {height} failed: {reason}")
        spec_height, root, ops, prev = self.speculative[block_hash]
        if spec_height != height or height != self.committed_height + 1:
            raise InvariantViolation(f"commit of height {height} after {self.committed_height}")
        if prev != self.committed_hash:
            raise InvariantViolation(f"certified block {height} does not extend the tip")
        self.committed_height, self.committed_hash, self.state_root = height, block_hash, root
        self.committed_ops.update(ops)
        self.blocks.append((payload, block_hash, cert))
        # Keep the speculative results above the new tip (a pipeline in flight).
        self.speculative = {
            d: held for d, held in self.speculative.items() if held[0] > height
        }
        return ops

    @classmethod
    def restore(cls, blocks: Sequence[tuple[bytes, bytes, CommitCertificate]]) -> TestLedger:
        ledger = cls()
        for i, (payload, block_hash, cert) in enumerate(blocks):
            ledger.commit(i + 1, cert.view, payload, block_hash, cert)
        return ledger
