"""The fault state of one node: per-link rules and the byzantine mode.

Changed by the control endpoint (``endpoint.py``) or, in the whole-network
simulation, directly (``set_links``, ``set_byzantine``, ``heal``). Peers are named
as the testnet names nodes (``shard0-node2``, ``node.node.node_name``); the genesis
maps a name to the validator's libp2p peer id. Loss is drawn from a seeded
``random.Random``, so a simulation stays reproducible.

The state is the p2p layer's ``LinkFilter`` (``node/p2p/linkfaults.py``): ``route``
answers per message, request or gossip copy to or from a peer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from consensus.kernel.errors import ShardnetError
from node.p2p.api import KIND_REQUEST

NONE = "none"
EQUIVOCATE = "equivocate"
WITHHOLD_VOTES = "withhold_votes"
WRONG_ROOTS = "wrong_roots"
FORGE_RECEIPTS = "forge_receipts"
DUPLICATE_RECEIPTS = "duplicate_receipts"
TAMPER_SYNC = "tamper_sync"
FABRICATE_INBOUND = "fabricate_inbound"
CENSOR = "censor"
BYZANTINE_MODES = (NONE, EQUIVOCATE, WITHHOLD_VOTES, WRONG_ROOTS, FORGE_RECEIPTS,
                   DUPLICATE_RECEIPTS, TAMPER_SYNC, FABRICATE_INBOUND, CENSOR)
ALL_PEERS = "*"
DELAY_MS_MAX = 600_000


class FaultError(ShardnetError):
    """A fault request that cannot apply (an unknown peer or mode, a value out of range)."""

    reason = "bad_fault"


@dataclass(frozen=True, slots=True)
class LinkRule:
    """What happens on the link to and from one peer."""

    delay_ms: int = 0
    loss: float = 0.0  # probability a message is lost
    partition: bool = False  # all traffic dropped, requests included

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= DELAY_MS_MAX:
            raise FaultError(f"delay_ms {self.delay_ms} not in [0, {DELAY_MS_MAX}]",
                             reason="bad_delay")
        if not 0.0 <= self.loss <= 1.0:
            raise FaultError(f"loss {self.loss} not in [0, 1]", reason="bad_loss")

    @property
    def inert(self) -> bool:
        return not (self.delay_ms or self.loss or self.partition)


class FaultState:
    """``names``: node name -> peer id of every other validator."""

    def __init__(self, names: Mapping[str, str], seed: int | str = 0,
                 on_change: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.names = dict(names)
        self._name_of = {peer: name for name, peer in self.names.items()}
        self.rng = random.Random(seed)
        self.links: dict[str, LinkRule] = {}  # peer id -> rule (inert rules left out)
        self.byzantine = NONE
        self.on_change = on_change
        self.changes = 0

    # -- changes ----------------------------------------------------------------------

    def set_links(self, peers: Iterable[str] | str, rule: LinkRule) -> dict[str, Any]:
        """Give every named peer (``"*"``: all) this rule, replacing its previous one."""
        if peers == ALL_PEERS:
            targets = sorted(self.names.values())
        elif isinstance(peers, str):
            raise FaultError('peers: a list of node names or "*"', reason="bad_peers")
        else:
            wanted = list(peers)
            unknown = sorted(set(wanted) - set(self.names))
            if unknown:
                raise FaultError(f"unknown peers {unknown}; known: {sorted(self.names)}",
                                 reason="unknown_peer")
            targets = [self.names[name] for name in wanted]
        for peer in targets:
            if rule.inert:
                self.links.pop(peer, None)
            else:
                self.links[peer] = rule
        return self._changed()

    def set_byzantine(self, mode: str) -> dict[str, Any]:
        if mode not in BYZANTINE_MODES:
            raise FaultError(f"unknown mode {mode!r}; known: {', '.join(BYZANTINE_MODES)}",
                             reason="unknown_mode")
        self.byzantine = mode
        return self._changed()

    def heal(self) -> dict[str, Any]:
        """No link rule, no byzantine mode."""
        self.links.clear()
        self.byzantine = NONE
        return self._changed()

    def _changed(self) -> dict[str, Any]:
        self.changes += 1
        snapshot = self.snapshot()
        if self.on_change is not None:
            self.on_change(snapshot)
        return snapshot

    def snapshot(self) -> dict[str, Any]:
        return {
            "byzantine": self.byzantine,
            "links": {self._name_of.get(peer, peer): asdict(rule)
                      for peer, rule in sorted(self.links.items(),
                                               key=lambda item: self._name_of.get(item[0], ""))},
            "changes": self.changes,
        }

    @property
    def active(self) -> bool:
        return bool(self.links) or self.byzantine != NONE

    # -- the p2p layer's LinkFilter -------------------------------------------------------

    def partitioned(self, peer: str) -> bool:
        rule = self.links.get(peer)
        return rule is not None and rule.partition

    def route(self, peer: str, kind: str) -> float | None:
        rule = self.links.get(peer)
        if rule is None:
            return 0.0
        if rule.partition:
            return None
        if rule.loss and kind != KIND_REQUEST and self.rng.random() < rule.loss:
            return None
        return rule.delay_ms / 1000


def names_of_validators(validators: Iterable[Iterable[Any]], own_key: bytes,
                        peer_id: Callable[[bytes], str]) -> dict[str, str]:
    """``shard{s}-node{i}`` -> peer id of every genesis validator but ourselves."""
    return {f"shard{v.shard}-node{v.index}": peer_id(v.public_key)
            for shard in validators for v in shard if v.public_key != own_key}
