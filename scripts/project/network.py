"""The network model of a projection: links between machines and the block policy.

Read from a TOML or JSON file (``--network FILE``; the committed default is
``scripts/project/network.toml``), validated: an unknown key, a missing one or a value
out of range is refused with where and why.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec

DEFAULT_NETWORK = Path(__file__).with_name("network.toml")

Ms = Annotated[float, msgspec.Meta(ge=0, le=60_000)]


class NetworkError(ValueError):
    """A network model file that cannot be used, with what is wrong."""


class Link(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    latency_ms: Ms  # one way
    bandwidth_mbit: Annotated[float, msgspec.Meta(gt=0, le=10_000_000)]  # each direction

    @property
    def bytes_per_s(self) -> float:
        return self.bandwidth_mbit * 1e6 / 8


class Consensus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    block_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)]
    block_txs_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    pipeline_depth: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1


class NetworkModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    network: Link  # between two validators' machines (the projection)
    local: Link  # between processes of this machine (the validation)
    consensus: Consensus

    @property
    def block_interval_ms(self) -> int:
        return self.consensus.block_interval_ms

    @property
    def block_txs_max(self) -> int:
        return self.consensus.block_txs_max

    @property
    def pipeline_depth(self) -> int:
        return self.consensus.pipeline_depth


def load_network(path: Path = DEFAULT_NETWORK) -> NetworkModel:
    """The model in ``path`` (``.toml`` or ``.json``); ``NetworkError`` on bad input."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NetworkError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if path.suffix == ".json":
            return msgspec.json.decode(raw, type=NetworkModel)
        data = tomllib.loads(raw.decode("utf-8"))
        return msgspec.convert(data, type=NetworkModel)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise NetworkError(f"{path}: not {'JSON' if path.suffix == '.json' else 'TOML'}: "
                           f"{exc}") from None
    except msgspec.ValidationError as exc:
        raise NetworkError(f"{path}: {exc}") from None
