"""Simulation checkers, kept apart from the replica code they judge (STYLE.md, VOPR).

Safety, checked on every commit of an honest replica: one block per height across
honest replicas, equal state roots at equal heights, every certificate verifies.
Liveness, checked after the healed phase: every honest replica at the same height and
state root, and every injected op committed exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from consensus.actions import Action, Broadcast, CommitBlock, ExecuteBlock, Persist, Send
from consensus.certificate import CommitCertificate, Verifier, verify_certificate


@dataclass
class Checker:
    chain_id: str
    shard: int
    validators: Sequence[bytes]
    verify: Verifier
    canonical: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    commits_checked: int = 0

    def on_commit(
        self,
        node: int,
        height: int,
        block_hash: bytes,
        cert: CommitCertificate,
        state_root: bytes,
    ) -> None:
        self.commits_checked += 1
        if not verify_certificate(
            cert, self.chain_id, self.shard, height, block_hash, self.validators, self.verify
        ):
            self.violations.append(f"node {node}: certificate at height {height} fails")
        seen = self.canonical.setdefault(height, (block_hash, state_root))
        if seen[0] != block_hash:
            self.violations.append(
                f"node {node}: divergent commit at height {height}: "
                f"{block_hash.hex()[:12]} vs {seen[0].hex()[:12]}"
            )
        elif seen[1] != state_root:
            self.violations.append(f"node {node}: state root differs at height {height}")

    def check_action_order(self, node: int, actions: list[Action]) -> None:
        """raft's ordering contract: ledger actions, then one Persist, then the sends."""
        kinds = [
            0 if isinstance(a, (ExecuteBlock, CommitBlock)) else
            1 if isinstance(a, Persist) else
            2 if isinstance(a, (Send, Broadcast)) else -1
            for a in actions
        ]  # fmt: skip
        ordered = [k for k in kinds if k >= 0]
        if ordered != sorted(ordered) or ordered.count(1) > 1:
            self.violations.append(f"node {node}: actions out of order: {ordered}")

    def check_converged(
        self,
        tips: dict[int, tuple[int, bytes]],
        committed_ops: dict[int, set[int]],
        injected: Iterable[int],
    ) -> None:
        """``tips``: node -> (height, state root) of every honest replica."""
        if len({tip for tip in tips.values()}) > 1:
            self.violations.append(f"not converged after healing: {_fmt(tips)}")
        wanted = set(injected)
        for node, ops in committed_ops.items():
            missing = wanted - ops
            if missing:
                self.violations.append(
                    f"node {node}: {len(missing)} ops never committed, e.g. {min(missing)}"
                )

    @property
    def ok(self) -> bool:
        return not self.violations


def _fmt(tips: dict[int, tuple[int, bytes]]) -> str:
    return ", ".join(f"{n}@{h}:{r.hex()[:8]}" for n, (h, r) in sorted(tips.items()))
