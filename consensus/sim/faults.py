"""The faults the PBFT simulator (``simulator.py``) injects into a run of one shard.

Which fault kinds a seed turns on and the network they give (``network.py``'s
``FaultyNetwork``: drops, delays, duplicates, reordering, partitions, commit-loss
windows and crashes), which replicas turn byzantine, and what a byzantine replica
does: an equivocating primary sends the odd-numbered peers another validly signed
block; a forger sends garbage, votes claiming another sender, validly signed votes
for blocks that do not exist, replays and forged certificates, and corrupts the
certificates it serves in block sync; a ``stale_prepared`` replica puts a stale
prepared certificate into its VIEW-CHANGEs; a censor leaves one op out of its blocks.

Every choice comes from the run's seeded ``random.Random``, drawn in a fixed order,
so a seed replays exactly. A replica's mode is ``Node.byzantine`` (None: honest).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from consensus.certificate import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    IndexedSignature,
    PreparedCertificate,
    pre_prepare_digest,
    sorted_signatures,
    vote_digest,
)
from consensus.kernel.codec import encode
from consensus.kernel.errors import DecodeError, InvariantViolation
from consensus.kernel.limits import MESSAGE_BYTES_MAX
from consensus.messages import (
    CertNotice,
    PrePrepare,
    ViewChange,
    Vote,
    decode_message,
    payload_digest,
    signing_digest,
)
from consensus.sim.network import FaultyNetwork, is_commit_news

if TYPE_CHECKING:
    from consensus.sim.simulator import Node

FAULT_KINDS = (
    "drop",
    "delay",
    "duplicate",
    "reorder",
    "partition",
    "commit_loss",
    "crash",
    "equivocate",
    "forge",
)
# Drawn only at pipeline_depth > 1 (depth-1 seeds keep their draws): a byzantine
# replica that puts a stale prepared certificate (a block prepared at h+1 on a block
# at h that then lost) into its VIEW-CHANGEs.
PIPELINE_FAULT_KINDS = ("stale_prepared",)
# The kinds that make replicas byzantine (the others are the network's).
BYZANTINE_KINDS = frozenset({"equivocate", "forge", "stale_prepared"})


def draw_kinds(rng: random.Random, faults: Sequence[str] | None, pipeline_depth: int) -> set[str]:
    """The kinds ``faults`` names, or (None) each of ``FAULT_KINDS`` with probability
    0.45, and ``stale_prepared`` likewise when pipelined."""
    if faults is None:
        kinds = {k for k in FAULT_KINDS if rng.random() < 0.45}
    else:
        kinds = set(faults)
    if pipeline_depth > 1 and faults is None and rng.random() < 0.45:
        kinds.add("stale_prepared")
    return kinds


def make_network(rng: random.Random, kinds: set[str], latency_ms: tuple[int, int]
                 ) -> FaultyNetwork:
    """The run's network with the seed's drop and duplicate rates for ``kinds``."""
    drop_p = rng.choice([0.02, 0.1, 0.25]) if "drop" in kinds else 0.0
    dup_p = rng.choice([0.05, 0.2]) if "duplicate" in kinds else 0.0
    return FaultyNetwork(rng, kinds, latency_ms, drop_p, dup_p, is_commit_news)


def place_byzantine(rng: random.Random, nodes: Sequence[Node], kinds: set[str], f: int,
                    censor: bool, seed: int, ops: int) -> int | None:
    """Set ``Node.byzantine`` of up to ``f`` replicas; return the op a censor leaves out.

    With ``censor``, replica 0 (view 0's primary) is the run's one byzantine replica:
    the seed's byzantine kinds are taken out of ``kinds`` (in place) and its op is
    drawn apart, so the seed's draws stay the same."""
    censored = None
    if censor:
        kinds -= BYZANTINE_KINDS
        nodes[0].byzantine = "censor"
        censored = random.Random(f"censor-{seed}").randint(1, ops)
    byzantine_kinds = sorted(kinds & BYZANTINE_KINDS)
    if byzantine_kinds and f > 0:
        # Up to f byzantine replicas, each an equivocator or a forger.
        for index in rng.sample(range(len(nodes)), rng.randint(1, f)):
            nodes[index].byzantine = rng.choice(byzantine_kinds)
    return censored


class Byzantine:
    """What the byzantine replicas of a run do, each by its ``Node.byzantine`` mode;
    the simulator's shell asks at each point where a mode acts. ``faults`` counts
    each act."""

    def __init__(self, rng: random.Random, faults: Counter[str], chain_id: str,
                 replicas: int, censored: int | None) -> None:
        self.rng = rng
        self.faults = faults
        self.chain_id = chain_id
        self.replicas = replicas
        self.censored = censored

    def pending(self, node: Node) -> dict[int, int]:
        """The node's pool as its shell reports and proposes it (a censor hides the op
        it censors, from its blocks and from its own request timer)."""
        if node.byzantine == "censor" and self.censored in node.mempool:
            return {op: t for op, t in node.mempool.items() if op != self.censored}
        return node.mempool

    def stepped(self, node: Node) -> None:
        """After each step: a ``stale_prepared`` replica keeps the certificates it saw."""
        if node.byzantine == "stale_prepared":
            self._collect_prepared(node)

    def outgoing(self, node: Node, dst: int, data: bytes, broadcast: bool) -> bytes:
        """What the node sends ``dst`` in place of ``data``."""
        if node.byzantine == "equivocate" and broadcast:
            return self._equivocate(node, dst, data)
        if node.byzantine == "stale_prepared":
            return self._stale_view_change(node, data)
        return data

    def received(self, node: Node, payload: bytes) -> None:
        """A forger keeps the first messages it receives, to replay them."""
        if node.byzantine == "forge" and len(node.seen) < 64:
            node.seen.append(payload)

    def ticked(self, node: Node) -> tuple[int, bytes] | None:
        """On a tick, a forger sometimes sends a forged message: (to, data)."""
        if node.byzantine == "forge" and self.rng.random() < 0.3:
            return self._forge(node)
        return None

    def served(self, peer: Node, cert: CommitCertificate) -> CommitCertificate:
        """The certificate ``peer`` serves in block sync (a forger corrupts half)."""
        if peer.byzantine == "forge" and self.rng.random() < 0.5:
            cert = forge_cert(cert, self.rng)
            self.faults["forged_sync"] += 1
        return cert

    def _equivocate(self, node: Node, dst: int, data: bytes) -> bytes:
        """Send the odd-numbered peers a different, validly signed block."""
        if dst % 2 == 0:
            return data
        try:
            msg = decode_message(data, MESSAGE_BYTES_MAX)
        except DecodeError:
            return data
        if not isinstance(msg, PrePrepare):
            return data
        alt_ops = [10_000_000 + msg.height * 100 + msg.view]
        parent = node.replica.chain_parent(msg.height)
        try:
            payload, block_hash = node.ledger.build(
                msg.height, msg.view, node.index, alt_ops, parent
            )
        except InvariantViolation:
            return data  # a PRE-PREPARE of a height no longer in flight here
        node.ledger.speculative.pop(block_hash, None)
        ph = payload_digest(payload)
        digest = pre_prepare_digest(self.chain_id, 0, msg.view, msg.height, block_hash, ph)
        alt = PrePrepare(
            0, msg.view, msg.height, block_hash, ph, node.index, node.signer.sign(digest),
            payload, msg.prev_cert,
        )  # fmt: skip
        self.faults["equivocate"] += 1
        return encode(alt)

    def _collect_prepared(self, node: Node) -> None:
        """Keep every prepared certificate this replica's votes show (any view)."""
        r = node.replica
        for (phase, view, height), box in r.votes.items():
            pp = r.pre_prepares.get((view, height))
            if phase != PHASE_PREPARE or pp is None:
                continue
            held = node.stale.setdefault(height, {})
            if pp.block_hash in held and held[pp.block_hash][0].view >= view:
                continue
            prepares = {s: sig for s, (d, sig) in box.items()
                        if d == pp.block_hash and s != r.primary(view)}
            if len(prepares) >= r.cfg.quorum - 1:
                cert = PreparedCertificate(view, height, pp.block_hash, pp.payload_hash,
                                           pp.signature, sorted_signatures(prepares))
                held[pp.block_hash] = (cert, pp.payload)

    def _stale_view_change(self, node: Node, data: bytes) -> bytes:
        """Replace the prepared certificate of a VIEW-CHANGE by another real one held
        for the same height (another block, any earlier view), re-signed."""
        try:
            vc = decode_message(data, MESSAGE_BYTES_MAX)
        except DecodeError:
            return data
        if not isinstance(vc, ViewChange):
            return data
        height = (vc.last_commit.height if vc.last_commit is not None else 0) + 1
        mine = vc.prepared.block_hash if vc.prepared is not None else None
        others = [held for d, held in sorted(node.stale.get(height, {}).items())
                  if d != mine and held[0].view < vc.new_view]
        if not others:
            return data
        cert, payload = max(others, key=lambda held: held[0].view)
        unsigned = ViewChange(0, vc.new_view, vc.sender, vc.checkpoint, vc.last_commit, cert,
                              b"")
        sig = node.signer.sign(signing_digest(self.chain_id, unsigned))
        self.faults["stale_prepared"] += 1
        return encode(ViewChange(0, vc.new_view, vc.sender, vc.checkpoint, vc.last_commit,
                                 cert, sig, payload))

    def _forge(self, node: Node) -> tuple[int, bytes] | None:
        rng, n, r = self.rng, self.replicas, node.replica
        kind = rng.choice(["garbage", "wrong_sender", "bogus_vote", "stale_replay", "bad_cert"])
        self.faults[f"forge_{kind}"] += 1
        dst = rng.choice([i for i in range(n) if i != node.index])
        h = r.committed_height + 1
        if kind == "garbage":
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
        elif kind == "wrong_sender":
            # Half claim another validator (the transport knows better), half carry
            # our own index with a signature that does not verify.
            victim = rng.choice([i for i in range(n) if i != node.index] + [node.index] * n)
            data = encode(Vote(0, PHASE_COMMIT, r.view, h, rng.randbytes(32), victim, b"\x01" * 64))
        elif kind == "bogus_vote":
            phase = rng.choice([PHASE_PREPARE, PHASE_COMMIT])
            bogus = rng.randbytes(32)
            sig = node.signer.sign(vote_digest(self.chain_id, 0, r.view, h, bogus, phase))
            data = encode(Vote(0, phase, r.view, h, bogus, node.index, sig))
        elif kind == "stale_replay" and node.seen:
            data = rng.choice(node.seen)
        else:
            cert = r.last_cert
            if cert is None:
                return None
            fake = forge_cert(
                CommitCertificate(0, cert.view, h, rng.randbytes(32), cert.signatures), rng
            )
            unsigned = CertNotice(0, node.index, fake, b"")
            sig = node.signer.sign(signing_digest(self.chain_id, unsigned))
            data = encode(CertNotice(0, node.index, fake, sig))
        return dst, data


def forge_cert(cert: CommitCertificate, rng: random.Random) -> CommitCertificate:
    """``cert`` with its first signature zeroed or its last one left out."""
    sigs = list(cert.signatures)
    if sigs and rng.random() < 0.5:
        first = sigs[0]
        sigs[0] = IndexedSignature(first.index, bytes(64))
        return CommitCertificate(cert.shard, cert.view, cert.height, cert.block_hash, tuple(sigs))
    return CommitCertificate(
        cert.shard, cert.view, cert.height, cert.block_hash, tuple(sigs[: len(sigs) - 1])
    )
