"""A chaos scenario file: timed actions beside a load profile.

```toml
name = "primary-crash"                 # default: the file's stem
description = "The primary of shard 0 is killed and restarted 5 s later."
shards = 1                             # the topology it runs on (validators: 4)
recovery_bound_s = 15                  # commits resume within this, per fault

[load]                                 # shardnet load's profile format (its option names)
rate = 150
duration = "25s"

[[actions]]
at = "5s"                              # after the load starts; "5s..8s": drawn by the seed
action = "kill"
nodes = "primary:0"                    # a selector, a node name, or a list of them
duration = "5s"                        # then undone (here: started again)
```

Actions: ``kill`` (SIGKILL / docker kill), ``stop`` (graceful), ``restart``, ``pause``
(SIGSTOP / docker pause), ``wipe`` (stop, delete the node's data folder, start),
``partition`` (the selected nodes cut off from every other node, both ways),
``degrade`` (``delay_ms`` and ``loss`` on their links), ``byzantine`` (``mode``).
With ``duration`` the action is undone after it (start, resume, heal, honest again);
without, the fault stays until the end-of-load heal. ``stagger`` acts on the selected
nodes one after another, that far apart (a rolling restart). ``recovery_bound_s``
may be given per action too.

Every problem is a ``ManifestError`` naming the field (``actions[2].nodes: ...``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.faults.state import BYZANTINE_MODES as NODE_BYZANTINE_MODES
from scripts.cli.load.rate import RateError, parse_duration

ACTIONS = ("kill", "stop", "restart", "pause", "wipe", "partition", "degrade", "byzantine")
# Actions that need the node's fault endpoint (`testnet init --faults`).
FAULT_ENDPOINT_ACTIONS = frozenset({"partition", "degrade", "byzantine"})
# Actions that cannot be undone: a duration makes no sense.
INSTANT_ACTIONS = frozenset({"restart"})
# The node's own list (what its fault endpoint accepts), without "none".
BYZANTINE_MODES = tuple(mode for mode in NODE_BYZANTINE_MODES if mode != "none")
TOP_KEYS = frozenset({"name", "description", "shards", "validators", "recovery_bound_s",
                      "load", "actions"})
ACTION_KEYS = frozenset({"at", "action", "nodes", "duration", "stagger", "mode", "delay_ms",
                         "loss", "recovery_bound_s"})
# The options of `shardnet load` a scenario's [load] may set (the target, the output
# and the seed belong to the chaos run; concurrency and find-max are refused below).
LOAD_KEYS = frozenset({"rate", "poisson", "duration", "max_txs", "mix", "cross_shard", "hot",
                       "senders", "seed", "accounts", "batch", "batch_interval",
                       "sign_workers", "drain", "audit_wait", "concurrency", "find_max"})
DEFAULT_RECOVERY_BOUND_S = 20.0
SHARDS_MAX = 8
DELAY_MS_MAX = 600_000
SELECTOR = re.compile(
    r"all|(?:primary|relayers|replicas|shard|half|f):(?:\d+|\*)|random:\d+:(?:\d+|\*)"
    r"|shard\d+-node\d+|s\d+n\d+|\d+/\d+")


class ManifestError(ValueError):
    """The scenario cannot be used; ``field`` says where (``actions[1].at``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.field = where
        self.message = message


@dataclass(frozen=True)
class Action:
    index: int
    at_s: tuple[float, float]  # a fixed time is (t, t); a range is drawn by the seed
    action: str
    nodes: tuple[str, ...]
    duration_s: float | None = None
    stagger_s: float = 0.0
    mode: str | None = None
    delay_ms: int = 0
    loss: float = 0.0
    recovery_bound_s: float = DEFAULT_RECOVERY_BOUND_S

    @property
    def needs_fault_endpoint(self) -> bool:
        return self.action in FAULT_ENDPOINT_ACTIONS


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    shards: int
    validators: int
    recovery_bound_s: float
    load: dict[str, Any]
    actions: tuple[Action, ...]
    path: Path | None = None
    load_duration_s: float = field(default=10.0)

    @property
    def needs_fault_endpoint(self) -> bool:
        return any(a.needs_fault_endpoint for a in self.actions)


def _duration(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ManifestError(where, f"expected a duration like \"5s\" or 500ms, got {value!r}")
    try:
        seconds = float(value) if isinstance(value, int | float) else parse_duration(value)
    except RateError as exc:
        raise ManifestError(where, str(exc)) from None
    if seconds < 0:
        raise ManifestError(where, f"{value!r} is negative")
    return seconds


def _at(value: Any, where: str) -> tuple[float, float]:
    if isinstance(value, str) and ".." in value:
        low_text, high_text = value.split("..", 1)
        low, high = _duration(low_text, where), _duration(high_text, where)
        if high < low:
            raise ManifestError(where, f"range {value!r} ends before it starts")
        return low, high
    seconds = _duration(value, where)
    return seconds, seconds


def _nodes(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ManifestError(where, "expected a selector or a non-empty list of them "
                            "(primary:0, f:0, shard:1, relayers:0, random:1:*, half:0, "
                            "replicas:0, all, or a node name such as shard0-node1)")
    out = []
    for item in items:
        if not isinstance(item, str) or not SELECTOR.fullmatch(item.strip()):
            raise ManifestError(where, f"{item!r} is not a node selector (primary:S, f:S, "
                                "shard:S, relayers:S, replicas:S, half:S, random:K:S, all, "
                                "shardS-nodeI, S/I; S may be * for every shard)")
        out.append(item.strip())
    return tuple(out)


def _shard_refs(selector: str) -> list[int]:
    """The shard numbers a selector names (``*`` and names without one: none)."""
    found = re.fullmatch(r"[a-z]+:(?:\d+:)?(\d+)", selector)
    if found:
        return [int(found.group(1))]
    named = re.fullmatch(r"shard(\d+)-node(\d+)|s(\d+)n(\d+)|(\d+)/(\d+)", selector)
    if named:
        return [int(next(g for g in named.groups() if g is not None))]
    return []


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ManifestError(where, f"expected an integer in [{low}, {high}], got {value!r}")
    return value


def _action(index: int, raw: Any, shards: int, default_bound: float) -> Action:
    where = f"actions[{index}]"
    if not isinstance(raw, Mapping):
        raise ManifestError(where, "expected a table ([[actions]])")
    unknown = sorted(set(raw) - ACTION_KEYS)
    if unknown:
        raise ManifestError(f"{where}.{unknown[0]}", f"unknown key (known: "
                            f"{', '.join(sorted(ACTION_KEYS))})")
    for key in ("at", "action", "nodes"):
        if key not in raw:
            raise ManifestError(f"{where}.{key}", "missing")
    name = raw["action"]
    if name not in ACTIONS:
        raise ManifestError(f"{where}.action", f"{name!r} is not one of {', '.join(ACTIONS)}")
    at_s = _at(raw["at"], f"{where}.at")
    nodes = _nodes(raw["nodes"], f"{where}.nodes")
    for selector in nodes:
        for shard in _shard_refs(selector):
            if shard >= shards:
                raise ManifestError(f"{where}.nodes", f"{selector!r} names shard {shard}, "
                                    f"but the scenario has {shards} shard(s)")
    duration = None
    if "duration" in raw:
        if name in INSTANT_ACTIONS:
            raise ManifestError(f"{where}.duration", f"{name} is instant: no duration")
        duration = _duration(raw["duration"], f"{where}.duration")
        if duration <= 0:
            raise ManifestError(f"{where}.duration", "must be > 0")
    stagger = _duration(raw.get("stagger", 0), f"{where}.stagger")
    mode = raw.get("mode")
    if name == "byzantine":
        if mode not in BYZANTINE_MODES:
            raise ManifestError(f"{where}.mode", f"{mode!r} is not one of "
                                f"{', '.join(BYZANTINE_MODES)}")
    elif mode is not None:
        raise ManifestError(f"{where}.mode", "only a byzantine action has a mode")
    delay_ms, loss = 0, 0.0
    if name == "degrade":
        delay_ms = _int(raw.get("delay_ms", 0), f"{where}.delay_ms", 0, DELAY_MS_MAX)
        loss_raw = raw.get("loss", 0.0)
        if isinstance(loss_raw, bool) or not isinstance(loss_raw, int | float) \
                or not 0 <= loss_raw <= 1:
            raise ManifestError(f"{where}.loss", f"expected a probability in [0, 1], "
                                f"got {loss_raw!r}")
        loss = float(loss_raw)
        if not delay_ms and not loss:
            raise ManifestError(where, "a degrade action needs delay_ms or loss")
    else:
        for key in ("delay_ms", "loss"):
            if key in raw:
                raise ManifestError(f"{where}.{key}", "only a degrade action has it")
    bound = _duration(raw.get("recovery_bound_s", default_bound), f"{where}.recovery_bound_s")
    return Action(index, at_s, name, nodes, duration, stagger, mode, delay_ms, loss, bound)


def parse_scenario(doc: Mapping[str, Any], *, name: str = "scenario",
                   path: Path | None = None) -> Scenario:
    """Check a decoded scenario document; ``ManifestError`` names the first bad field."""
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise ManifestError(unknown[0], f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    title = doc.get("name", name)
    if not isinstance(title, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", title):
        raise ManifestError("name", f"{title!r}: lowercase letters, digits, - and _")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ManifestError("description", "expected a string")
    shards = _int(doc.get("shards", 1), "shards", 1, SHARDS_MAX)
    validators = _int(doc.get("validators", 4), "validators", 4, 31)
    if (validators - 1) % 3:
        raise ManifestError("validators", f"{validators} is not 3f+1 (4, 7, 10, ...)")
    bound = _duration(doc.get("recovery_bound_s", DEFAULT_RECOVERY_BOUND_S), "recovery_bound_s")
    load = doc.get("load")
    if not isinstance(load, Mapping):
        raise ManifestError("load", "missing: a [load] table in shardnet load's profile "
                            "format (rate, duration, mix, cross-shard, ...)")
    for key in load:
        if key.replace("-", "_") not in LOAD_KEYS:
            raise ManifestError(f"load.{key}", "not a load option a scenario may set "
                                f"(known: {', '.join(sorted(LOAD_KEYS))})")
    load_duration = _duration(load.get("duration", "10s"), "load.duration")
    if "concurrency" in load or "find-max" in load or "find_max" in load:
        raise ManifestError("load", "a chaos load is open-loop (rate), without find-max")
    raw_actions = doc.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        raise ManifestError("actions", "missing: at least one [[actions]] table")
    actions = tuple(_action(i, raw, shards, bound) for i, raw in enumerate(raw_actions))
    for action in actions:
        end = action.at_s[1] + (action.duration_s or 0.0)
        if end >= load_duration:
            raise ManifestError(f"actions[{action.index}].at",
                                f"the fault ends at {end:g} s, not before the load does "
                                f"(load.duration {load_duration:g} s): leave time to recover")
    return Scenario(title, description, shards, validators, bound, dict(load), actions, path,
                    load_duration)


def load_scenario(path: Path) -> Scenario:
    """Read and check the scenario file ``path``."""
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ManifestError(str(path), exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(str(path), f"not valid TOML: {exc}") from None
    return parse_scenario(doc, name=path.stem, path=path)
