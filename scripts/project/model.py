"""The projection's arithmetic: pure functions of costs, network and configuration.

Two machine models:

* ``project`` (the deployment): every validator on its own machine of ``cores`` cores,
  machines linked as ``[network]`` of the network model says (latency, bandwidth).
* ``project_shared`` (the validation): every node of the testnet and the load generator
  on one machine of ``cores`` cores, links of the local latency.

Per validator and per transaction its shard originates (µs of CPU):

    parallel = verify + execution + storage + x (execution + storage)
               + bundles per block x (2f+1) verify / b   (receipt certificates)
    serial   = state_root + shell_tx + x (state_root + shell_tx) + per_block / b
    per_block = PBFT steps (messages(R) x step) + shell_block
                + (S - 1) x foreign_block     (every other shard's announcements)

A receipt applied at its destination is charged what a transaction costs without its
signature. ``serial`` runs under the node process's GIL (Python: the event loop,
admission bookkeeping, the ledger's state root, consensus); signature checks release
the GIL (threads), execution runs in worker processes and SQLite writes on their
own thread, so ``parallel`` spreads over the cores. Per shard:

    cpu bound    TPS = (cores - idle) / (serial + parallel)
    GIL bound    TPS = (1 - idle) / serial
    bandwidth    TPS = bandwidth / bytes the busiest validator (the primary, a relayer)
                 sends per transaction
    rounds bound TPS = block_txs_max x depth / round(block_txs_max)
    round(b)     = delays x latency + b x tx_bytes x (R - 1) / bandwidth
                   + b x (2 (execution + state_root) + storage)

(``delays``, the one-way network delays of a commit, comes from the simulated network:
``structure.py``.) Shards are independent but for receipts, which the per-transaction
costs carry, so the network's TPS is S x the shard's. Latencies at an offered load:
the simulated light-load latency at the deployment's link latency, plus the round's
transfer and processing time of the block that load makes, inflated by 1 / (1 - u) at
CPU utilisation u.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scripts.project.costs import Costs
from scripts.project.network import Link, NetworkModel
from scripts.project.structure import Structure

US = 1e-6


@dataclass(frozen=True)
class Config:
    shards: int
    validators: int
    cores: float  # per validator machine (project) or of the one machine (shared)
    cross: float  # share of transactions with a receipt for another shard


@dataclass(frozen=True)
class Projection:
    config: Config
    tps: float  # the network's highest sustainable TPS
    binding: str  # the resource that sets it
    bounds: dict[str, float]  # per shard: the TPS each resource allows
    block_txs: float  # block size at the highest TPS
    load_tps: float  # the offered load the latencies are for
    commit_ms: float  # median submit-to-commit at load_tps
    finality_ms: float  # median submit-to-finality of a cross-shard tx at load_tps
    cpu_utilisation: float  # at load_tps, of the busiest resource among cpu/GIL
    per_tx_us: dict[str, float] = field(default_factory=dict)  # per validator, by part


def fault_tolerance(validators: int) -> int:
    return (validators - 1) // 3


def per_tx_parts(costs: Costs, config: Config, block_txs: float) -> dict[str, float]:
    """µs per validator per originated transaction, by part (see the module doc)."""
    x, r, s = config.cross, config.validators, config.shards
    step_us, messages = costs.message(r)
    bundles = min(s - 1, x * block_txs) if s > 1 else 0.0
    b = max(block_txs, 1.0)
    return {
        "signature": costs.verify_us,
        "receipt_certificates": bundles * (2 * fault_tolerance(r) + 1) * costs.verify_us / b,
        "execution": costs.execution_us * (1 + x),
        "storage": costs.storage_us * (1 + x),
        "state_root": costs.state_root_us * (1 + x),
        "shell": costs.shell_tx_us * (1 + x),
        "consensus": step_us * messages / b,
        "shell_block": costs.shell_block_us / b,
        "announcements": (s - 1) * costs.foreign_block_us / b,
    }


PARALLEL = ("signature", "receipt_certificates", "execution", "storage")


def split(parts: dict[str, float]) -> tuple[float, float]:
    """(serial µs, parallel µs)."""
    parallel = sum(parts[k] for k in PARALLEL)
    return sum(parts.values()) - parallel, parallel


def bytes_per_tx(costs: Costs, config: Config, block_txs: float) -> float:
    """Bytes the busiest validator sends per originated transaction: the primary's
    blocks and forwards (measured at n = 4, scaled with its R - 1 peers), a relayer's
    receipts to the R validators of their destination, and its certificates."""
    r, x = config.validators, config.cross
    scale = (r - 1) / 3
    b = max(block_txs, 1.0)
    bundles = min(config.shards - 1, x * b) if config.shards > 1 else 0.0
    certificate = (2 * fault_tolerance(r) + 1) * costs.certificate_bytes_per_signer
    return (costs.p2p_bytes_per_tx * scale + costs.p2p_bytes_per_block * scale / b
            + x * costs.receipt_bytes * r + bundles * certificate * r / b)


def round_ms(costs: Costs, link: Link, structure: Structure, config: Config,
             block_txs: float, cpu_slowdown: float = 1.0) -> float:
    """One block's consensus round: network delays, moving the block, processing it
    (``cpu_slowdown``: how many times slower than on an idle core of its own)."""
    transfer_s = block_txs * costs.tx_bytes * (config.validators - 1) / link.bytes_per_s
    processing_us = block_txs * (2 * (costs.execution_us + costs.state_root_us)
                                 + costs.storage_us) * (1 + config.cross)
    return (structure.commit_delays * link.latency_ms + 1000 * transfer_s
            + processing_us / 1000 * cpu_slowdown)


def _block_size(network: NetworkModel, shard_tps: float, cycle_ms: float) -> float:
    return max(1.0, min(network.block_txs_max, shard_tps * cycle_ms / 1000))


def _cycle_ms(costs: Costs, network: NetworkModel, link: Link, structure: Structure,
              config: Config, block_txs: float, cpu_slowdown: float = 1.0) -> float:
    """Time between two blocks of a shard: the batch interval, or the round when longer,
    divided among the blocks in agreement at once."""
    return max(network.block_interval_ms,
               round_ms(costs, link, structure, config, block_txs, cpu_slowdown)
               ) / network.pipeline_depth


def shard_bounds(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
                 block_txs: float) -> dict[str, float]:
    """Per shard, the TPS each resource allows at blocks of ``block_txs``."""
    serial, parallel = split(per_tx_parts(costs, config, block_txs))
    idle = costs.idle_cpu_share
    link = network.network
    full = _cycle_ms(costs, network, link, structure, config, network.block_txs_max)
    return {
        "cpu": max(0.0, config.cores - idle) / ((serial + parallel) * US),
        "gil": max(0.0, 1.0 - idle) / (serial * US),
        "bandwidth": link.bytes_per_s / bytes_per_tx(costs, config, block_txs),
        "rounds": network.block_txs_max * 1000 / full,
    }


def project(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
            load_share: float = 0.5) -> Projection:
    """Each validator on its own machine: the highest TPS, its binding resource, and the
    latencies at ``load_share`` of it."""
    block = float(network.block_txs_max)
    link = network.network
    bounds = shard_bounds(costs, network, structure, config, block)
    for _ in range(50):  # the block size at the highest rate depends on that rate
        bounds = shard_bounds(costs, network, structure, config, block)
        cycle = _cycle_ms(costs, network, link, structure, config, block)
        block = _block_size(network, min(bounds.values()), cycle)
    shard_tps = min(bounds.values())
    binding = min(bounds, key=lambda k: bounds[k])
    load = shard_tps * load_share
    commit, final, utilisation = latencies(costs, network, structure, config, load, bounds)
    return Projection(config, shard_tps * config.shards, binding, bounds, block,
                      load * config.shards, commit, final, utilisation,
                      per_tx_parts(costs, config, block))


def latencies(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
              shard_load: float, bounds: dict[str, float]) -> tuple[float, float, float]:
    """(median commit ms, median finality ms, CPU utilisation) at ``shard_load`` tx/s."""
    link = network.network
    block = 1.0
    for _ in range(50):
        block = _block_size(network, shard_load,
                            _cycle_ms(costs, network, link, structure, config, block))
    utilisation = shard_load / min(bounds["cpu"], bounds["gil"])
    if utilisation >= 1:
        return math.inf, math.inf, utilisation
    extra = (round_ms(costs, link, structure, config, block)
             - structure.commit_delays * link.latency_ms) / (1 - utilisation)
    return (structure.commit_ms(link.latency_ms) + extra,
            structure.finality_ms(link.latency_ms) + 2 * extra, utilisation)


# -- the validation: everything on one machine ----------------------------------------------


@dataclass(frozen=True)
class SharedPrediction:
    config: Config
    tps: float  # the testnet's highest TPS (the loader's CPU included)
    block_txs: float
    cpu_us_per_tx: float  # all nodes and the loader
    fixed_cores: float  # idle + per-block CPU of all nodes at that rate, in cores
    commit_ms: float  # median submit-to-commit at half of ``tps``


def shared_cpu(costs: Costs, config: Config, loader_us: float, block_txs: float,
               cycle_ms: float) -> tuple[float, float]:
    """(µs of CPU per transaction on the machine, cores the nodes take whatever the
    load: idle plus per-block work at one block per ``cycle_ms`` per shard)."""
    parts = per_tx_parts(costs, config, block_txs)
    per_tx = config.validators * (sum(parts.values()) - parts["consensus"]
                                  - parts["shell_block"] - parts["announcements"]) + loader_us
    step_us, messages = costs.message(config.validators)
    nodes = config.shards * config.validators
    # every node: its own shard's blocks (PBFT steps, shell) and every other shard's
    per_node_block_us = (step_us * messages + costs.shell_block_us
                         + (config.shards - 1) * costs.foreign_block_us)
    fixed = nodes * (costs.idle_cpu_share + per_node_block_us * US * 1000 / cycle_ms)
    return per_tx, fixed


def project_shared(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
                   loader_us: float, saturate: bool, p99_limit_ms: float = 1000.0,
                   ) -> SharedPrediction:
    """The local testnet: S x R nodes and the loader on ``config.cores`` cores.

    ``saturate`` (``bench node``: everything submitted at once): blocks fill to
    ``block_txs_max``, one every ``block_txs_max / TPS``, and the machine's CPU is the
    limit. Otherwise (``bench e2e``'s find-max: the highest offered rate whose p99
    commit stays under ``p99_limit_ms``): the highest rate at which the CPU keeps up
    and the p99 (a whole cycle of waiting, the network delays and twice the median's
    processing share) fits the limit.
    """
    if saturate:
        block = float(network.block_txs_max)
        tps, per_tx, fixed = 1.0, 0.0, 0.0
        for _ in range(50):
            cycle = max(float(network.block_interval_ms), block / tps * 1000)
            per_tx, fixed = shared_cpu(costs, config, loader_us, block, cycle)
            tps = max(0.01, config.cores - fixed) / (per_tx * US)
        return SharedPrediction(config, tps, block, per_tx, fixed,
                                _shared_commit(costs, network, structure, config, loader_us,
                                               tps * 0.5)[0])
    low, high = 0.0, 1_000_000.0
    for _ in range(60):
        rate = (low + high) / 2
        _, p99, utilisation = _shared_commit(costs, network, structure, config, loader_us,
                                             rate)
        if utilisation < 1 and p99 <= p99_limit_ms:
            low = rate
        else:
            high = rate
    block, cycle = _shared_block(costs, network, structure, config, low)
    per_tx, fixed = shared_cpu(costs, config, loader_us, block, cycle)
    commit = _shared_commit(costs, network, structure, config, loader_us, low * 0.5)[0]
    return SharedPrediction(config, low, block, per_tx, fixed, commit)


def _slowdown(config: Config) -> float:
    """Nodes per core: a block's processing on a machine all nodes share."""
    return max(1.0, config.shards * config.validators / config.cores)


def _shared_block(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
                  rate: float) -> tuple[float, float]:
    block, cycle = 1.0, float(network.block_interval_ms)
    for _ in range(50):
        cycle = _cycle_ms(costs, network, network.local, structure, config, block,
                          _slowdown(config))
        block = _block_size(network, rate / config.shards, cycle)
    return block, cycle


def _shared_commit(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
                   loader_us: float, rate: float) -> tuple[float, float, float]:
    """(median commit ms, p99 commit ms, CPU utilisation) of the shared machine."""
    block, cycle = _shared_block(costs, network, structure, config, rate)
    per_tx, fixed = shared_cpu(costs, config, loader_us, block, cycle)
    utilisation = (rate * per_tx * US + fixed) / config.cores
    if utilisation >= 1:
        return math.inf, math.inf, utilisation
    link = network.local
    processing = (round_ms(costs, link, structure, config, block, _slowdown(config))
                  - structure.commit_delays * link.latency_ms) / (1 - utilisation)
    median = structure.commit_ms(link.latency_ms) + processing
    return (median, cycle + structure.commit_delays * link.latency_ms + 2 * processing,
            utilisation)
