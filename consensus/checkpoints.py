"""Checkpoint bookkeeping (Castro and Liskov 4.3): votes every K heights, the stable
checkpoint that a quorum certifies, and which heights peers claim to have reached."""

from __future__ import annotations

from consensus.certificate import CheckpointProof, sorted_signatures
from consensus.kernel.errors import check


class CheckpointTracker:
    """Holds CHECKPOINT votes for heights in (stable, stable + window]; pure data."""

    def __init__(self, n: int, f: int, quorum: int, stable: CheckpointProof) -> None:
        self.n = n
        self.f = f
        self.quorum = quorum
        self.stable = stable
        self.votes: dict[int, dict[int, tuple[bytes, bytes]]] = {}
        self.claims: dict[int, int] = {}
        self.mine: dict[int, bytes] = {}
        self.my_vote: bytes | None = None
        self.my_vote_height = 0

    def has_vote(self, height: int, sender: int, block_hash: bytes) -> bool | None:
        """True: same vote held; False: a different one held; None: nothing held."""
        held = self.votes.get(height, {}).get(sender)
        if held is None:
            return None
        return held[0] == block_hash

    def add(
        self, height: int, sender: int, block_hash: bytes, signature: bytes, keep: bool
    ) -> None:
        self.claims[sender] = max(self.claims.get(sender, 0), height)
        if keep:
            self.votes.setdefault(height, {})[sender] = (block_hash, signature)

    def record_mine(
        self, height: int, index: int, block_hash: bytes, signature: bytes, data: bytes
    ) -> None:
        self.mine[height] = block_hash
        self.votes.setdefault(height, {})[index] = (block_hash, signature)
        self.my_vote = data
        self.my_vote_height = height

    def quorum_at(self, height: int) -> CheckpointProof | None:
        box = self.votes.get(height)
        if not box:
            return None
        tally: dict[bytes, dict[int, bytes]] = {}
        for sender, (block_hash, sig) in box.items():
            tally.setdefault(block_hash, {})[sender] = sig
        for block_hash, sigs in tally.items():
            if len(sigs) >= self.quorum:
                return CheckpointProof(height, block_hash, sorted_signatures(sigs))
        return None

    def make_stable(self, proof: CheckpointProof) -> None:
        mine = self.mine.get(proof.height)
        check(
            mine is None or mine == proof.block_hash,
            f"a quorum checkpointed another block at height {proof.height}: state diverged",
        )
        self.stable = proof
        for height in [h for h in self.votes if h <= proof.height]:
            del self.votes[height]
        for height in [h for h in self.mine if h < proof.height]:
            del self.mine[height]

    def claimed_height(self) -> int:
        """The highest height at least f+1 peers (so one honest) claim to have reached."""
        heights = sorted(self.claims.values(), reverse=True)
        return heights[self.f] if len(heights) > self.f else 0
