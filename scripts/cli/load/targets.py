"""Where the load goes: a testnet folder, or URLs and what ``GET /v1/network`` says.

One URL is enough: a node answers ``/v1/network`` with the chain id, the genesis and
every validator's advertised API URL. A URL that does not answer from here (the
host port of a compose network seen from inside it, say) is replaced by the
validator's genesis ``api_address`` when that one answers. Every failure is one
line (``TargetError``), never a traceback.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec

from consensus.kernel.errors import ShardnetError
from scripts.cli.client import ApiFailure, call
from scripts.cli.exits import UNREACHABLE, USAGE
from scripts.cli.testnet.layout import TestnetDir
from sharding.genesis import Genesis, load_genesis

PROBE_TIMEOUT_S = 2.0
URL_ENV = "SHARDNET_URL"


class TargetError(click.ClickException):
    """The network cannot be used as asked: one line for the user (exit 1)."""


class NoTestnet(TargetError):
    """No such testnet folder, or no target given (exit 2, ``exits.USAGE``)."""

    exit_code = USAGE


class NoAnswer(TargetError):
    """No node answers (exit 3, ``exits.UNREACHABLE``)."""

    exit_code = UNREACHABLE


@dataclass(frozen=True, slots=True)
class NodeTarget:
    name: str
    shard: int
    index: int
    url: str


@dataclass(frozen=True, slots=True)
class Network:
    chain_id: str
    genesis: Genesis
    nodes: tuple[NodeTarget, ...]
    source: str  # how it was found, for the report

    @property
    def num_shards(self) -> int:
        return self.genesis.num_shards

    def shard_nodes(self, shard: int) -> list[NodeTarget]:
        return [node for node in self.nodes if node.shard == shard]


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, ApiFailure):
        return f"HTTP {exc.status} {exc.body.get('error')}"
    return str(exc) or type(exc).__name__


def urls_from_env(urls: Sequence[str]) -> list[str]:
    """``--url`` values, or ``SHARDNET_URL`` (comma-separated) when none was given."""
    if urls:
        return [u.rstrip("/") for u in urls]
    env = os.environ.get(URL_ENV, "")
    return [u.strip().rstrip("/") for u in env.split(",") if u.strip()]


def _answers(url: str) -> bool:
    try:
        call("GET", f"{url}/v1/status", timeout_s=PROBE_TIMEOUT_S)
    except (ApiFailure, OSError, ValueError):
        return False
    return True


def _pick_reachable(candidates: list[list[str]]) -> list[str]:
    """For each node, the first candidate URL that answers (the first one when none
    does: the node may come back later)."""

    def pick(urls: list[str]) -> str:
        return next((u for u in urls if _answers(u)), urls[0])

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(candidates)))) as pool:
        return list(pool.map(pick, candidates))


def network_from_answer(answer: dict[str, Any], source: str, *, probe: bool = True
                        ) -> Network:
    """The network a node describes at ``/v1/network``."""
    try:
        genesis = load_genesis(answer["genesis"])
        nodes_json = answer["nodes"]
        candidates = []
        for node in nodes_json:
            validator = genesis.validators[int(node["shard"])][int(node["index"])]
            urls = [str(node["api_url"]).rstrip("/")]
            fallback = f"http://{validator.api_address}"
            if fallback not in urls:
                urls.append(fallback)
            candidates.append(urls)
    except (KeyError, IndexError, TypeError, ValueError, ShardnetError) as exc:
        raise TargetError(f"{source}: malformed /v1/network answer ({describe_error(exc)})"
                          ) from None
    chosen = _pick_reachable(candidates) if probe else [c[0] for c in candidates]
    nodes = tuple(NodeTarget(str(n.get("name") or f"shard{n['shard']}-node{n['index']}"),
                             int(n["shard"]), int(n["index"]), url)
                  for n, url in zip(nodes_json, chosen, strict=True))
    return Network(genesis.chain_id, genesis, nodes, source)


def discover_urls(urls: Sequence[str], *, probe: bool = True) -> Network:
    """Ask each URL in turn for ``/v1/network``; the first answer describes the network.
    Every URL that answers must report the same chain."""
    if not urls:
        raise NoTestnet(f"no target: give --testnet DIR, --url URL or set {URL_ENV}")
    errors: list[str] = []
    network: Network | None = None
    for url in urls:
        try:
            answer = call("GET", f"{url}/v1/network", timeout_s=PROBE_TIMEOUT_S)
        except (ApiFailure, OSError, ValueError) as exc:
            errors.append(f"{url}: {describe_error(exc)}")
            continue
        if network is None:
            network = network_from_answer(answer, url, probe=probe)
        elif answer.get("chain_id") != network.chain_id:
            raise TargetError(f"{url} is on chain {answer.get('chain_id')!r}, "
                              f"{network.source} on {network.chain_id!r}: one network at a time")
    if network is None:
        raise NoAnswer(f"no node answers /v1/network: {'; '.join(errors)}: is the network "
                       f"up? (check --url / {URL_ENV})")
    return network


def network_from_testnet(root: Path) -> Network:
    """The testnet folder's manifest and genesis; the nodes are not asked."""
    testnet = TestnetDir(root)
    try:
        manifest = testnet.load_manifest()
        genesis = load_genesis(testnet.genesis_path)
    except FileNotFoundError as exc:
        raise NoTestnet(str(exc)) from None
    except (OSError, msgspec.DecodeError) as exc:
        raise NoTestnet(f"{testnet.manifest_path}: {exc}") from None
    except ShardnetError as exc:
        raise NoTestnet(f"{testnet.genesis_path}: {exc.detail}") from None
    if manifest.chain_id != genesis.chain_id:
        raise TargetError(f"{root}: manifest chain {manifest.chain_id!r} but genesis "
                          f"{genesis.chain_id!r}")
    nodes = tuple(NodeTarget(n.name, n.shard, n.index, n.api_url.rstrip("/"))
                  for n in manifest.nodes)
    return Network(genesis.chain_id, genesis, nodes, str(root))


def check_chain(network: Network) -> None:
    """One node of the network must answer, on the expected chain."""
    errors = []
    for node in network.nodes:
        try:
            status = call("GET", f"{node.url}/v1/status", timeout_s=PROBE_TIMEOUT_S)
        except (ApiFailure, OSError, ValueError) as exc:
            errors.append(f"{node.name}: {describe_error(exc)}")
            continue
        if status.get("chain_id") != network.chain_id:
            raise TargetError(f"{node.name} ({node.url}) is on chain {status.get('chain_id')!r}, "
                              f"expected {network.chain_id!r}")
        return
    shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
    raise NoAnswer(f"no node of {network.source} answers ({shown}); is the testnet up?")


def discover_if_asked(root: Path | None, urls: Sequence[str]) -> Network | None:
    """The network ``--url`` / ``SHARDNET_URL`` names, found by ``GET /v1/network``, when
    no testnet folder was given; None when the folder is to be used. The one rule every
    command (``load``, ``audit``, ``testnet status``) follows."""
    given = urls_from_env(urls)
    if root is None and given:
        return discover_urls(given)
    return None


def resolve(root: Path | None, urls: Sequence[str]) -> Network:
    """``--testnet`` wins, else ``--url`` / ``SHARDNET_URL``, else the default folder."""
    network = discover_if_asked(root, urls)
    if network is not None:
        return network
    network = network_from_testnet(root or Path("testnets/default"))
    check_chain(network)
    return network
