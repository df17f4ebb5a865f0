"""The whole-network simulator's faults: which a run has, and the network's fault model.

:class:`FaultyLinks` is a ``node.p2p.memory.LinkModel`` that asks
``consensus.sim.network.FaultyNetwork.route`` (the PBFT simulator's drops, delays,
duplicates, reordering and commit-loss windows) about every message, request, answer
and gossip copy between two nodes, and shows each to an optional ``watch``. Which
kinds are on, and the partition, commit-loss and crash windows, come from one seeded
draw. Besides, the faults inside nodes (``node/faults/``) a run places: byzantine
nodes (named, or drawn from the seed: ``BYZANTINE_KINDS``) and link faults
(``LinkFault``), with the parsers of their ``shardnet simulate`` options.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.certificate import fault_tolerance
from consensus.sim.network import NETWORK_FAULTS, FaultyNetwork, is_commit_news
from node.faults.state import FABRICATE_INBOUND, FORGE_RECEIPTS, FaultError, LinkRule
from node.p2p.memory import KIND_MESSAGE
from node.wire import CHANNEL_CONSENSUS

NodeId = tuple[int, int]  # (shard, index)
# Byzantine nodes a seed may draw (faults=None, or named in ``faults``): kind -> mode.
BYZANTINE_KINDS = {"byzantine_primary": FABRICATE_INBOUND, "forged_bundles": FORGE_RECEIPTS}
FAULT_KINDS = (*NETWORK_FAULTS, *BYZANTINE_KINDS)


def _is_commit_news(data: Any) -> bool:
    kind, channel, payload = data
    return kind == KIND_MESSAGE and channel == CHANNEL_CONSENSUS and is_commit_news(payload)


def make_fault_network(rng: random.Random, faults: Sequence[str] | None,
                       latency_ms: tuple[int, int]) -> FaultyNetwork:
    """The kinds ``faults`` names (None: each drawn with probability 0.45), with the
    seed's drop and duplicate rates."""
    if faults is None:
        kinds = {k for k in NETWORK_FAULTS if rng.random() < 0.45}
    else:
        unknown = set(faults) - set(NETWORK_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; "
                             f"known: {', '.join(NETWORK_FAULTS)}")
        kinds = set(faults)
    drop_p = rng.choice([0.02, 0.1, 0.25]) if "drop" in kinds else 0.0
    dup_p = rng.choice([0.05, 0.2]) if "duplicate" in kinds else 0.0
    return FaultyNetwork(rng, kinds, latency_ms, drop_p, dup_p, _is_commit_news)


class FaultyLinks:
    """``LinkModel`` over a ``FaultyNetwork``; peers are libp2p peer ids."""

    def __init__(self, net: FaultyNetwork, ids: dict[str, NodeId],
                 watch: Callable[[NodeId, str, int, bytes], None] | None = None) -> None:
        self.net = net
        self.ids = ids
        self.reorders = "reorder" in net.kinds
        self.watch = watch

    def route(self, src: str, dst: str, kind: str, channel: int, data: bytes
              ) -> Sequence[float]:
        if self.watch is not None:
            self.watch(self.ids[src], kind, channel, data)
        delays = self.net.route(self.ids[src], self.ids[dst], (kind, channel, data))
        return [delay / 1000 for delay in delays]


@dataclass(frozen=True)
class LinkFault:
    """A link fault on ``node``'s own fault state (``node/faults``) for a window: its
    traffic to and from ``peers`` (None: every peer) is delayed, lost or cut."""

    node: NodeId
    at_ms: int
    duration_ms: int
    peers: tuple[NodeId, ...] | None = None
    delay_ms: int = 0
    loss: float = 0.0
    partition: bool = False

    def spec(self) -> str:
        """``shardnet simulate --link-fault`` text (``parse_link_fault`` reads it)."""
        rules = []
        if self.partition:
            rules.append("partition")
        if self.delay_ms:
            rules.append(f"delay={self.delay_ms}")
        if self.loss:
            rules.append(f"loss={self.loss:g}")
        if self.peers is not None:
            rules.append("peers=" + "+".join(f"{s}/{i}" for s, i in self.peers))
        shard, index = self.node
        return f"{shard}/{index}:{self.at_ms}:{self.duration_ms}:{','.join(rules)}"


def parse_node(text: str) -> NodeId:
    """``SHARD/INDEX`` -> (shard, index); ``ValueError`` with what is wrong."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r}: a node is SHARD/INDEX, e.g. 0/1")
    return int(parts[0]), int(parts[1])


def parse_byzantine(text: str) -> tuple[int, int, str]:
    """``SHARD/INDEX=MODE`` -> (shard, index, mode)."""
    where, sep, mode = text.partition("=")
    if not sep or not mode:
        raise ValueError(f"{text!r}: a byzantine node is SHARD/INDEX=MODE, "
                         "e.g. 0/0=fabricate_inbound")
    return (*parse_node(where), mode)


def parse_link_fault(text: str) -> LinkFault:
    """``SHARD/INDEX:AT_MS:DURATION_MS:RULE,...`` with RULE ``partition``,
    ``delay=MS``, ``loss=P`` or ``peers=S/I+S/I`` (default: every peer)."""
    parts = text.split(":")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{text!r}: a link fault is SHARD/INDEX:AT_MS:DURATION_MS:RULES, "
                         "e.g. 0/1:300:1500:partition or 0/0:0:2500:delay=40,loss=0.2")
    fields: dict[str, Any] = {}
    for rule in filter(None, parts[3].split(",")):
        name, _, value = rule.partition("=")
        try:
            if name == "partition" and not value:
                fields["partition"] = True
            elif name == "delay":
                fields["delay_ms"] = int(value)
            elif name == "loss":
                fields["loss"] = float(value)
            elif name == "peers":
                fields["peers"] = tuple(parse_node(n) for n in value.split("+"))
            else:
                raise ValueError("unknown rule")
        except ValueError:
            raise ValueError(f"{text!r}: bad rule {rule!r} (partition, delay=MS, loss=P, "
                             "peers=S/I+S/I)") from None
    if not fields.keys() - {"peers"}:
        raise ValueError(f"{text!r}: no rule (partition, delay=MS or loss=P)")
    try:
        LinkRule(delay_ms=fields.get("delay_ms", 0), loss=fields.get("loss", 0.0))
    except FaultError as exc:
        raise ValueError(f"{text!r}: {exc.detail}") from None
    return LinkFault(parse_node(parts[0]), int(parts[1]), int(parts[2]), **fields)


def place_byzantine(seed: int, shards: int, validators: int, faults: Sequence[str] | None,
                    named: Sequence[tuple[int, int, str]], nodes: Collection[NodeId],
                    counts: Counter[str]) -> dict[NodeId, str]:
    """The ``named`` byzantine nodes (shard, index, mode), then those the seed's kinds
    add (a random shard with room: at most f byzantine nodes per shard), each drawn
    one counted in ``counts``; ``ValueError`` for a node not in ``nodes``, more than f
    in a shard or an unknown fault kind."""
    placed: dict[NodeId, str] = {}
    for shard, index, mode in named:
        if (shard, index) not in nodes:
            raise ValueError(f"byzantine {shard}/{index}: no such node")
        placed[(shard, index)] = mode
    f = fault_tolerance(validators)
    for shard in range(shards):
        count = sum(s == shard for s, _ in placed)
        if count > f:
            raise ValueError(f"shard {shard}: {count} byzantine nodes, f = {f}")
    if faults is None:
        draw = random.Random(f"{seed}/byzantine")
        kinds = [k for k in BYZANTINE_KINDS if draw.random() < 0.45]
    else:
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; "
                             f"known: {', '.join(FAULT_KINDS)}")
        draw = random.Random(f"{seed}/byzantine")
        kinds = [k for k in BYZANTINE_KINDS if k in faults]
    for kind in kinds:
        shard = draw.randrange(shards)
        free = [i for i in range(validators) if (shard, i) not in placed]
        if validators - len(free) >= f or not free:
            continue
        # The primary of view 0 proposes first; a relayer may be anyone.
        index = 0 if kind == "byzantine_primary" and 0 in free else draw.choice(free)
        placed[(shard, index)] = BYZANTINE_KINDS[kind]
        counts[kind] += 1
    return placed
