"""A scenario's plan for one seed: when each action happens and on which nodes.

Everything random is drawn here, from ``random.Random(f"{seed}/{action index}")``:
a time range (``at = "5s..8s"``) and the nodes of ``f:S``, ``half:S`` and
``random:K:S``. So the same ``--rng-seed`` gives the same plan (the load uses the
same seed for its transactions). Selectors that depend on the network's state at
that moment (``primary:S``, ``relayers:S``, ``replicas:S``) are resolved when the
action is applied, from the nodes' ``/v1/status`` (``resolve_live``): no rng.

Selectors (S is a shard number, or ``*`` for every shard):

- ``primary:S``: the primary of shard S now; ``relayers:S``: the relayers of the block
  being proposed now (the primary and the next f validators by index); ``replicas:S``:
  every node of S but the primary;
- ``f:S``: f nodes of S; ``half:S``: half of S's nodes (no side of a split keeps a
  quorum); ``random:K:S``: K nodes of S; ``shard:S``: all of S; ``all``: every node;
- a node name: ``shard0-node1``, ``s0n1`` or ``0/1``.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.certificate import fault_tolerance
from scripts.chaos.manifest import Action, Scenario
from scripts.cli.testnet.control import ControlError, resolve

LIVE_KINDS = frozenset({"primary", "relayers", "replicas"})


class ScheduleError(ValueError):
    """A selector that this testnet cannot satisfy (a shard it does not have, say)."""


@dataclass(frozen=True)
class Topology:
    """The nodes of each shard, by validator index."""

    shards: tuple[tuple[str, ...], ...]

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Topology:
        by_shard: dict[int, list[tuple[int, str]]] = {}
        for name in names:
            found = re.fullmatch(r"shard(\d+)-node(\d+)", name)
            if found is None:
                raise ScheduleError(f"{name!r} is not a node name (shardS-nodeI)")
            by_shard.setdefault(int(found.group(1)), []).append((int(found.group(2)), name))
        if sorted(by_shard) != list(range(len(by_shard))):
            raise ScheduleError(f"shards {sorted(by_shard)} are not 0..N-1")
        return cls(tuple(tuple(name for _, name in sorted(by_shard[s]))
                         for s in range(len(by_shard))))

    @property
    def names(self) -> list[str]:
        return [name for shard in self.shards for name in shard]

    def shard_of(self, name: str) -> int:
        return next(s for s, names in enumerate(self.shards) if name in names)

    def f(self, shard: int) -> int:
        return fault_tolerance(len(self.shards[shard]))


@dataclass(frozen=True)
class Step:
    """One action of the plan: at ``at_s`` seconds into the load, on ``nodes`` (node
    names, fixed by the seed) plus ``live`` (selectors resolved when it happens)."""

    at_s: float
    action: Action
    nodes: tuple[str, ...]
    live: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        a = self.action
        out: dict[str, Any] = {"index": a.index, "at_s": round(self.at_s, 3),
                               "action": a.action, "nodes": list(self.nodes),
                               "live": list(self.live), "duration_s": a.duration_s}
        if a.stagger_s:
            out["stagger_s"] = a.stagger_s
        if a.mode:
            out["mode"] = a.mode
        if a.action == "degrade":
            out.update(delay_ms=a.delay_ms, loss=a.loss)
        return out


def _shards(topology: Topology, text: str) -> list[int]:
    if text == "*":
        return list(range(len(topology.shards)))
    shard = int(text)
    if shard >= len(topology.shards):
        raise ScheduleError(f"shard {shard}: the testnet has {len(topology.shards)} shard(s)")
    return [shard]


def _static(topology: Topology, selector: str, rng: random.Random) -> list[str]:
    """The node names a seed-fixed selector names (drawing from ``rng``)."""
    if selector == "all":
        return topology.names
    parts = selector.split(":")
    if len(parts) == 1:  # a node name
        try:
            return [resolve(topology.names, selector)]
        except ControlError as exc:
            raise ScheduleError(str(exc)) from None
    kind, shard_text = parts[0], parts[-1]
    out: list[str] = []
    for shard in _shards(topology, shard_text):
        names = list(topology.shards[shard])
        if kind == "shard":
            out += names
            continue
        count = {"f": topology.f(shard), "half": len(names) // 2}.get(kind)
        if count is None:  # random:K:S
            count = int(parts[1])
        if count > len(names):
            raise ScheduleError(f"{selector}: shard {shard} has only {len(names)} nodes")
        out += sorted(rng.sample(names, count))
    return out


def plan(scenario: Scenario, seed: int, topology: Topology) -> list[Step]:
    """The scenario's steps for ``seed`` on ``topology``, in time order."""
    steps = []
    for action in scenario.actions:
        rng = random.Random(f"{seed}/{action.index}")
        low, high = action.at_s
        at_s = low if low == high else round(rng.uniform(low, high), 3)
        nodes: list[str] = []
        live: list[str] = []
        for selector in action.nodes:
            if selector.split(":")[0] in LIVE_KINDS:
                _shards(topology, selector.split(":")[-1])  # the shard must exist
                live.append(selector)
            else:
                nodes += [n for n in _static(topology, selector, rng) if n not in nodes]
        steps.append(Step(at_s, action, tuple(nodes), tuple(live)))
    return sorted(steps, key=lambda s: (s.at_s, s.action.index))


def primaries(topology: Topology, statuses: Mapping[str, Mapping[str, Any] | None]
              ) -> dict[int, int]:
    """Each shard's primary index now: what the nodes in the highest view say (the most
    common answer among them). A shard none of whose nodes answers is left out."""
    out = {}
    for shard, names in enumerate(topology.shards):
        answers = [s for n in names if (s := statuses.get(n)) is not None]
        if not answers:
            continue
        top = max(int(s.get("view", 0)) for s in answers)
        votes = Counter(int(s["primary"]) for s in answers if int(s.get("view", 0)) == top
                        and "primary" in s)
        if votes:
            out[shard] = votes.most_common(1)[0][0]
    return out


def resolve_live(topology: Topology, selector: str,
                 statuses: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """The nodes a state-dependent selector names now."""
    kind, shard_text = selector.split(":")
    known = primaries(topology, statuses)
    out: list[str] = []
    for shard in _shards(topology, shard_text):
        if shard not in known:
            raise ScheduleError(f"{selector}: no node of shard {shard} answers /v1/status")
        names = topology.shards[shard]
        primary = known[shard]
        if kind == "primary":
            out.append(names[primary])
        elif kind == "relayers":
            out += [names[(primary + k) % len(names)] for k in range(topology.f(shard) + 1)]
        else:  # replicas
            out += [n for i, n in enumerate(names) if i != primary]
    return out
