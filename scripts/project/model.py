"""The projection's arithmetic: pure functions of costs, network and configuration.

Two machine models:

* ``project`` (the deployment): every validator on its own machine of ``cores`` cores,
  machines linked as ``[network]`` of the network model says (latency, bandwidth).
* ``project_shared`` (the validation): every node of the testnet and the load generator
  on one machine of ``cores`` cores, links of the local latency.

Per validator and per transaction its shard originates (µs of CPU):

    parallel = verify + execution + storage + x (execution + storage)
    serial   = state_root + shell_tx + x (state_root + shell_tx)
               + x (cross_source + cross_destination - execution - storage
                    - state_root - shell_tx)     (the measured cross-shard surplus)

and per cycle (each shard cuts one block per cycle):

    serial_block   = PBFT steps (messages(R) x step) + shell_block
                     + (S - 1) x foreign_block            (every other shard's announcement)
    parallel_block = bundles x (2f+1) verify             (receipt certificates)

A receipt applied at its destination is charged what a transaction costs without its
signature. ``serial`` runs under the node process's GIL (Python: the event loop,
admission bookkeeping, the ledger's state root, consensus); signature checks release
the GIL (threads), execution runs in worker processes and SQLite writes on their
own thread, so ``parallel`` spreads over the cores. A shard offered L tx/s cuts a block
every cycle, the longest of:

    interval     block_interval_ms / pipeline depth
    rounds       round(b) / depth,  round(b) = delays x latency
                 + b x tx_bytes x (R - 1) / bandwidth + b x (2 (execution + state_root)
                 + storage)   (the primary builds, the replicas execute, all commit)
    gil          serial_block / (1 - idle - L x serial)
    cpu          (serial_block + parallel_block) / (cores - idle - L x (serial + parallel))

with b = L x cycle. The shard's highest rate is the highest L for which b stays within
``block_txs_max`` and the busiest validator's bytes (the primary's blocks and forwards,
measured at n = 4 and scaled with its R - 1 peers; a relayer's receipts to the R
validators of their destination) fit the link; what sets the cycle there binds.
(``delays``, the one-way network delays of a commit, comes from the simulated network:
``structure.py``.) Shards are independent but for receipts and announcements, which the
costs above carry, so the network's TPS is S x the shard's. Latency at an offered load:
the simulated light-load latency at the link latency plus the block's processing; when
CPU paces the cuts, a transaction waits up to a cycle for its cut and a cycle for its
processing (median 1.5 cycles plus the network delays).

The shared machine (``project_shared``, the validation's find-max): with the costs a
paced testnet of the same shape measured here (``costs.paced``: per node, CPU per
transaction of its shard and per cycle, in which its shard cuts a block and it checks
every other shard's announcement), the cores received bound

    S R idle + S R cycle_us x 1000 / cycle_ms + (R (tx_us + cross) + loader) x rate

so the cycle stretches (bigger blocks) once the per-transaction work leaves less than
the per-cycle work needs at the block interval; the throughput limit is where no cycle
is long enough. The latency limit is where a step's p99 passes ``p99_limit_ms``; the
find-max's prediction is the lesser, and ``binding`` says which. A saturating burst
(``bench node``) fills blocks: the composed costs (the 1 x 4 burst-and-paced fit) are
used there.

The p99 of a paced step at ``rate`` on the shared machine:

    p99(rate) = structural(rate) + floor
    structural = delays + 2 cycle + processing     (CPU paces the cuts)
               = delays + cycle + processing + max(processing, cpu_cycle)
                                                   (the interval does)
    floor      = p99_cal(r0) - structural_cal(r0)                  (0 % cross-shard)
    floor(x)   = floor + (p99_mix(r0, x_c) - structural_cal(r0, x_c) - floor) x / x_c
                                         (cross-shard share x; the mixed window at x_c)

``structural`` is what the cycle explains: a cycle waiting for the cut, the commit
round's network delays, the block's processing, and its wait behind the other nodes'
per-cycle work: a whole cycle when CPU paces the cuts, else the time the cores left
by the transactions need for that work (``cpu_cycle``, which reaches the interval
where CPU starts to pace: the p99 is continuous in the rate; before 2026-12-01 22:30
the interval's case was the processing twice, and the p99 jumped by a cycle there,
which pinned the p99 limit at the jump whatever the floor). It has no scheduling: 8 node processes
and the loader on 2 cores, each node's per-cycle work arriving in bursts at the same
cut, a commit path that crosses 4 processes' event loops 3 times, each hop waiting in
the run queue behind the others' bursts (and GC, SQLite's synchronous commits). On
this machine that tail is a floor: the measured p99 of a paced 2 x 4 testnet was
0.9-1.5 s at every step from 100 to 500 tx/s (`bench e2e --quick`, 22:00 UTC) where the
structural p99 is 0.2-0.45 s, so it is measured, not derived: ``floor`` is the
calibration's own paced windows' p99 (``costs.paced``'s points, median of the windows)
at its lowest rate ``r0`` less the structural p99 the model gives that rate on the
calibration's cores with the calibration's loader (``latency_floor``; 0 when
negative; never from a validation run). The lowest rate because the floor is what is
left at small blocks, where the structural part is the least and least uncertain; the
residuals at the calibration's higher rates are reported beside it, as a check of the
structural part's growth with the rate, not used. The floor is constant in the rate:
one measured term, not a curve fitted through the calibration's points.

When the floor is near the limit, the predicted maximum is the rate at which a small
structural p99 still fits beside it, and it moves by a factor for a small change of
the floor (which moves by more than that between runs: the find-max's measured
maximum did, 552-1,812 tx/s on one quiet day). So the prediction carries its
sensitivity: the maximum with the floor 10 % higher and 10 % lower; when either moves
it by more than ``ILL_CONDITIONED`` (25 %, the validation's tolerance), the prediction
is ill-conditioned: a range, not a number (``--validate`` reports it and does not gate
it). Cost files without the measured p99 (before it) have no floor term.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from scripts.project.costs import Costs
from scripts.project.network import Link, NetworkModel
from scripts.project.structure import Structure

US = 1e-6
FIXED_POINT_ROUNDS = 30  # block size <-> cycle: converges in a few rounds
BISECTIONS = 50  # of the rate: 10^7 tx/s down to well under 0.01 tx/s


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
        # measured beyond a local tx at source and destination, less the destination's
        # apply charged above (by symmetry a validator receives as many as it sends)
        "cross_shard": x * max(0.0, costs.cross_source_us + costs.cross_destination_us
                               - costs.execution_us - costs.storage_us
                               - costs.state_root_us - costs.shell_tx_us),
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


def per_tx_us(costs: Costs, config: Config) -> tuple[float, float]:
    """(serial, parallel) µs per validator per originated transaction, without the
    per-block work (see ``per_block_us``)."""
    parts = per_tx_parts(costs, config, 1.0)
    for per_block in ("receipt_certificates", "consensus", "shell_block", "announcements"):
        parts[per_block] = 0.0
    return split(parts)


def per_block_us(costs: Costs, config: Config, block_txs: float) -> tuple[float, float]:
    """(serial, parallel) µs per validator per cycle, in which every shard cuts a block:
    its own block's PBFT steps and shell, every other shard's announcement, and (with
    cross-shard traffic) a bundle certificate from each other shard."""
    step_us, messages = costs.message(config.validators)
    s = config.shards
    serial = step_us * messages + costs.shell_block_us + (s - 1) * costs.foreign_block_us
    bundles = min(s - 1, config.cross * block_txs) if s > 1 else 0.0
    parallel = bundles * (2 * fault_tolerance(config.validators) + 1) * costs.verify_us
    return serial, parallel


@dataclass(frozen=True)
class ShardState:
    """One shard of the deployment at an offered rate."""

    feasible: bool
    block_txs: float
    cycle_ms: float
    pace: str  # what sets the cycle: interval, rounds, gil or cpu
    median_ms: float
    finality_ms: float
    utilisation: float  # of the busier of the GIL and the cores


def shard_state(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
                rate: float) -> ShardState:
    """A shard offered ``rate`` tx/s. A block is cut every block interval, or later when
    the round takes longer, or when a validator's GIL or cores need longer for the
    per-block work beside the transactions' (the batching loop waits: fewer, bigger
    blocks). Infeasible when blocks would outgrow ``block_txs_max`` or a link its
    bandwidth."""
    link = network.network
    serial_tx, parallel_tx = per_tx_us(costs, config)
    idle = costs.idle_cpu_share
    spare_gil = 1.0 - idle - rate * serial_tx * US
    spare_cpu = config.cores - idle - rate * (serial_tx + parallel_tx) * US
    if spare_gil <= 0 or spare_cpu <= 0:
        return ShardState(False, math.inf, math.inf, "cpu", math.inf, math.inf, math.inf)
    block, cycle, pace = 1.0, float(network.block_interval_ms), "interval"
    for _ in range(FIXED_POINT_ROUNDS):
        serial_b, parallel_b = per_block_us(costs, config, block)
        paces = {"interval": network.block_interval_ms / network.pipeline_depth,
                 "rounds": round_ms(costs, link, structure, config, block)
                 / network.pipeline_depth,
                 "gil": serial_b * US * 1000 / spare_gil,
                 "cpu": (serial_b + parallel_b) * US * 1000 / spare_cpu}
        pace = max(paces, key=lambda k: paces[k])
        cycle = paces[pace]
        block = _block_size(network, rate, cycle)
    if rate * cycle / 1000 > network.block_txs_max * 1.0001:
        return ShardState(False, block, cycle, pace, math.inf, math.inf, math.inf)
    bytes_per_s = rate * bytes_per_tx(costs, config, block)
    if bytes_per_s > link.bytes_per_s:
        return ShardState(False, block, cycle, "bandwidth", math.inf, math.inf, math.inf)
    serial_b, parallel_b = per_block_us(costs, config, block)
    per_cycle = 1000 / cycle
    utilisation = max((rate * serial_tx * US + serial_b * US * per_cycle) / (1 - idle),
                      (rate * (serial_tx + parallel_tx) * US
                       + (serial_b + parallel_b) * US * per_cycle) / (config.cores - idle))
    delays_ms = structure.commit_delays * link.latency_ms
    processing = round_ms(costs, link, structure, config, block) - delays_ms
    if pace in ("gil", "cpu"):  # a transaction waits for a cut, then for the processing
        median = max(structure.commit_ms(link.latency_ms) + processing,
                     delays_ms + 1.5 * cycle)
    else:
        median = structure.commit_ms(link.latency_ms) + processing
    # finality: the source's commit, the relay, the destination's next cut and round
    finality = median + (structure.finality_ms(link.latency_ms)
                         - structure.commit_ms(link.latency_ms)) + processing
    return ShardState(True, block, cycle, pace, median, finality, utilisation)


def project(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
            load_share: float = 0.5) -> Projection:
    """Each validator on its own machine: the highest TPS (the highest per-shard rate
    that stays feasible, times S), what binds it, and the latencies at ``load_share``
    of it."""
    low, high = 0.0, 10_000_000.0
    for _ in range(BISECTIONS):
        rate = (low + high) / 2
        if shard_state(costs, network, structure, config, rate).feasible:
            low = rate
        else:
            high = rate
    top = shard_state(costs, network, structure, config, low)
    beyond = shard_state(costs, network, structure, config, low * 1.001 + 0.01)
    binding = beyond.pace if not beyond.feasible and beyond.pace == "bandwidth" else top.pace
    if binding == "interval":  # blocks full at the interval: the block size caps it
        binding = "block size"
    at = shard_state(costs, network, structure, config, low * load_share)
    serial_tx, parallel_tx = per_tx_us(costs, config)
    bounds = {"gil": (1 - costs.idle_cpu_share) / (serial_tx * US),
              "cpu": (config.cores - costs.idle_cpu_share) / ((serial_tx + parallel_tx) * US),
              "bandwidth": network.network.bytes_per_s / bytes_per_tx(costs, config,
                                                                       top.block_txs),
              "highest": low}
    return Projection(config, low * config.shards, binding, bounds, top.block_txs,
                      low * load_share * config.shards, at.median_ms, at.finality_ms,
                      at.utilisation, per_tx_parts(costs, config, top.block_txs))


# -- the validation: everything on one machine ----------------------------------------------


FLOOR_STEP = 0.10  # the sensitivity: the floor 10 % higher and lower
# A prediction that moves more than this for +-10 % of the floor is ill-conditioned: a
# 10 % error in a p99 (less than its run-to-run noise) would by itself use up the
# validation's tolerance (25 %).
ILL_CONDITIONED = 0.25


@dataclass(frozen=True)
class LatencyFloor:
    """The measured p99 term of the shared machine (see the module doc): at the
    calibration's lowest paced rate, the measured p99 less the structural p99 at that
    rate on the calibration's cores. ``points``: every paced rate's (rate, measured
    p99, structural p99); the residuals at the higher rates are not used, they check the
    structural formula's growth with the rate (reported beside the prediction)."""

    ms: float  # the floor added to the structural p99 (>= 0), at ``cross``
    points: tuple[tuple[float, float, float], ...]  # (rate, measured p99, structural p99)
    cross: float = 0.0  # the cross-shard share ``ms`` is for
    local_ms: float = 0.0  # the floor at 0 % cross-shard (= ms when cross is 0)
    # the calibration's mixed window: (rate, share, measured p99, structural p99)
    cross_point: tuple[float, float, float, float] | None = None

    @property
    def residuals(self) -> tuple[float, ...]:
        return tuple(measured - structural for _, measured, structural in self.points)


@dataclass(frozen=True)
class SharedPrediction:
    config: Config
    tps: float  # the testnet's highest TPS: the least of the two limits below
    block_txs: float  # per shard, at ``tps``
    cycle_ms: float  # between two blocks of a shard, at ``tps``
    cpu_us_per_tx: float  # all nodes and the loader
    cpu_us_per_cycle: float  # the nodes' per-block work for one block of every shard
    commit_ms: float  # median submit-to-commit at half of ``tps``
    throughput_tps: float = 0.0  # the highest rate the cores keep up with
    latency_tps: float = 0.0  # the highest rate whose p99 fits (saturate: = throughput)
    binding: str = "cpu"  # which sets ``tps``: cpu, latency or block size
    costs_from: str = "composed"  # "paced S x R": the paced testnet's costs; else composed
    p99_ms: float = 0.0  # at ``tps``
    p99_half_ms: float = 0.0  # p99 submit-to-commit at half of ``tps``
    floor: LatencyFloor | None = None  # the measured p99 term (None: not calibrated)
    # the sensitivity to the floor: ``tps`` with the floor 10 % higher and 10 % lower
    tps_floor_high: float = 0.0
    tps_floor_low: float = 0.0
    sensitivity: float = 0.0  # the larger relative move of ``tps`` for +-10 % of the floor
    ill_conditioned: bool = False  # sensitivity > ILL_CONDITIONED: a range, not a number


def shared_cpu(costs: Costs, config: Config, loader_us: float, paced: bool = True,
               ) -> tuple[float, float, float]:
    """(µs of CPU per transaction on the machine, all nodes and the loader; µs of CPU of
    all nodes per cycle, in which every shard cuts one block; cores the idle nodes take).

    ``paced`` and with the paced costs of this testnet's shape (``costs.paced``, format
    3; for the find-max's paced steps, not for a saturating burst), each node
    is charged what it was measured to spend at paced rates on this machine: per
    transaction of its shard ``tx_us`` and per cycle ``cycle_us`` (its shard's block,
    every other shard's announcement), plus, per cross-shard transaction, the receipt
    and the measured surplus; the CPU budget is then

        S R idle + S R cycle_us x cycles/s + (R (tx_us + cross) + loader) x rate
            <= cores received.

    Otherwise the per-operation costs composed as the deployment model does."""
    nodes = config.shards * config.validators
    bundles = 0.0
    if config.shards > 1 and config.cross > 0:  # one bundle per block and destination
        bundles = (config.shards * (config.shards - 1) * config.validators
                   * (2 * fault_tolerance(config.validators) + 1) * costs.verify_us)
    measured = costs.paced_for(config.shards, config.validators) if paced else None
    if measured is not None:
        parts = per_tx_parts(costs, config, 1.0)
        cross = parts["cross_shard"] + config.cross * (
            costs.execution_us + costs.storage_us + costs.state_root_us + costs.shell_tx_us)
        per_tx = config.validators * (measured.tx_us + cross) + loader_us
        return per_tx, nodes * measured.cycle_us + bundles, nodes * measured.idle_cpu_share
    parts = per_tx_parts(costs, config, 1.0)
    per_tx = config.validators * (sum(parts.values()) - parts["consensus"]
                                  - parts["shell_block"] - parts["announcements"]
                                  - parts["receipt_certificates"]) + loader_us
    step_us, messages = costs.message(config.validators)
    # every node: its own shard's block (PBFT steps, shell) and every other shard's
    per_node_block_us = (step_us * messages + costs.shell_block_us
                         + (config.shards - 1) * costs.foreign_block_us)
    return per_tx, nodes * per_node_block_us + bundles, nodes * costs.idle_cpu_share


@dataclass(frozen=True)
class SharedState:
    """The shared machine at an offered rate."""

    feasible: bool
    block_txs: float
    cycle_ms: float
    median_ms: float
    p99_ms: float


def shared_state(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
                 loader_us: float, rate: float, paced: bool = True, floor_ms: float = 0.0,
                 ) -> SharedState:
    """Blocks are cut every block interval, or later when the round takes longer, or when
    the machine needs longer to do the per-block work of every shard beside the
    transactions' (the batching loop waits for the CPU: fewer, bigger blocks). When CPU
    sets the pace, a transaction waits up to a cycle to be cut and a cycle to be
    processed; otherwise the light-load latency of the simulated network plus the
    block's processing on the shared cores. The p99 is that structural figure plus
    ``floor_ms`` (the measured term: ``latency_floor``)."""
    per_tx, per_cycle, idle = shared_cpu(costs, config, loader_us, paced)
    spare = config.cores - idle - rate * per_tx * US  # cores left for per-block work
    if spare <= 0:
        return SharedState(False, math.inf, math.inf, math.inf, math.inf)
    link, slowdown = network.local, _slowdown(config)
    cpu_cycle_ms = per_cycle * US / spare * 1000
    block, cycle = 1.0, float(network.block_interval_ms)
    for _ in range(FIXED_POINT_ROUNDS):
        cycle = max(_cycle_ms(costs, network, link, structure, config, block, slowdown),
                    cpu_cycle_ms)
        block = _block_size(network, rate / config.shards, cycle)
    if block >= network.block_txs_max and rate / config.shards * cycle / 1000 > block:
        return SharedState(False, block, cycle, math.inf, math.inf)  # blocks cannot keep up
    delays_ms = structure.commit_delays * link.latency_ms
    processing = round_ms(costs, link, structure, config, block, slowdown) - delays_ms
    light = structure.commit_ms(link.latency_ms) + processing
    if cpu_cycle_ms >= network.block_interval_ms:
        return SharedState(True, block, cycle, max(light, delays_ms + 1.5 * cycle),
                           delays_ms + 2 * cycle + processing + floor_ms)
    # below the CPU's pace the block's processing still waits behind the other nodes'
    # per-cycle work, which takes the cores ``cpu_cycle_ms`` of every cycle: continuous
    # with the CPU-paced p99 where ``cpu_cycle_ms`` reaches the interval
    return SharedState(True, block, cycle, light,
                       delays_ms + cycle + processing + max(processing, cpu_cycle_ms)
                       + floor_ms)


def _highest(ok: Callable[[float], bool]) -> float:
    low, high = 0.0, 1_000_000.0
    for _ in range(BISECTIONS):
        rate = (low + high) / 2
        if ok(rate):
            low = rate
        else:
            high = rate
    return low


def latency_floor(costs: Costs, network: NetworkModel, structure: Structure,
                  shards: int, validators: int, cross: float = 0.0) -> LatencyFloor | None:
    """The measured p99 term for a paced ``shards`` x ``validators`` testnet, from the
    calibration's own paced windows (never from a validation run): at each paced rate,
    the p99 submit-to-commit measured and the structural p99 the model gives that rate
    on the calibration's cores with the calibration's loader; the floor is the residual
    at the lowest rate (0 when negative: the structural formula already covers it),
    where the blocks are smallest and the least of the residual is the structural
    formula's growth with the rate. None when the costs have no measured p99 for this
    shape (files from before it, or a shape not calibrated paced).

    ``cross`` > 0: cross-shard traffic raises the p99 beyond the CPU the model charges
    for it (receipts, bundles and relays arrive in bursts at every cut of the other
    shard, and a block applying inbound receipts takes longer), so the calibration's
    mixed window (``cross_points``: its lowest rate, a share x_c of transfers to the
    other shard) gives a second residual the same way, with the structural p99 of that
    share; the floor at ``cross`` is the line through the two, (0, local) and
    (x_c, mixed), at ``cross`` (0 when negative). One measured point per term, as for
    the local floor: not a curve fitted through the validation. Files without the
    mixed window: the local floor at every share."""
    paced = costs.paced_for(shards, validators)
    if paced is None or paced.cores <= 0:
        return None
    config = Config(shards, validators, paced.cores, 0.0)
    points = []
    for point in paced.points:
        if "commit_p99_ms" not in point:
            continue
        structural = shared_state(costs, network, structure, config, costs.loader_submit_us,
                                  point["rate"]).p99_ms
        if math.isfinite(structural):  # a rate the model says cannot be kept up is no floor
            points.append((point["rate"], point["commit_p99_ms"], structural))
    if not points:
        return None
    points.sort()
    _, measured, structural = points[0]
    local = max(0.0, measured - structural)
    mixed = sorted((p["rate"], p["cross"], p["commit_p99_ms"]) for p in paced.cross_points
                   if "commit_p99_ms" in p and p.get("cross", 0.0) > 0)
    if cross <= 0 or not mixed:
        return LatencyFloor(local, tuple(points), 0.0, local)
    rate, share, p99 = mixed[0]
    at_share = shared_state(costs, network, structure, Config(shards, validators, paced.cores,
                                                              share),
                            costs.loader_submit_us, rate).p99_ms
    if not math.isfinite(at_share):  # the model cannot keep the window's rate up
        return LatencyFloor(local, tuple(points), 0.0, local)
    residual = max(0.0, p99 - at_share)
    return LatencyFloor(max(0.0, local + (residual - local) * cross / share), tuple(points),
                        cross, local, (rate, share, p99, at_share))


def project_shared(costs: Costs, network: NetworkModel, structure: Structure, config: Config,
                   loader_us: float, saturate: bool, p99_limit_ms: float = 1000.0,
                   floor_ms: float | None = None) -> SharedPrediction:
    """The local testnet: S x R nodes and the loader on ``config.cores`` cores.

    Two limits. Throughput: the highest rate the cores keep up with (the per-cycle work
    stretches the cycle as the per-transaction work leaves fewer cores for it; blocks
    grow until ``block_txs_max``). Latency: the highest rate whose p99 commit (a cycle
    waiting for the cut, the commit round, the block's processing on the shared cores,
    and the measured floor) stays under ``p99_limit_ms``. ``saturate`` (``bench node``:
    everything submitted at once) is the throughput limit; otherwise (``bench e2e``'s
    find-max, whose steps pass only under the p99 limit) the lesser of the two, and
    ``binding`` says which. ``floor_ms`` None: the calibrated floor (``latency_floor``),
    none when not calibrated; a number: that floor (the sensitivity's +-10 %, tests).
    The prediction is ill-conditioned when +-10 % of the floor moves it by more than
    ``ILL_CONDITIONED``.
    """
    floor = None if saturate else latency_floor(costs, network, structure, config.shards,
                                                config.validators, config.cross)
    base_floor = (floor.ms if floor else 0.0) if floor_ms is None else floor_ms

    def state(rate: float, scale: float = 1.0) -> SharedState:
        return shared_state(costs, network, structure, config, loader_us, rate,
                            paced=not saturate, floor_ms=base_floor * scale)

    def latency_limit(scale: float) -> float:
        return _highest(lambda rate: state(rate, scale).feasible
                        and state(rate, scale).p99_ms <= p99_limit_ms)

    throughput = _highest(lambda rate: state(rate).feasible)
    latency = throughput if saturate else latency_limit(1.0)
    low = min(throughput, latency)
    top = state(low)
    if not saturate and latency < throughput * 0.999:
        binding = "latency"
    elif top.block_txs >= network.block_txs_max * 0.999:
        binding = "block size"
    else:
        binding = "cpu"
    per_tx, per_cycle, _ = shared_cpu(costs, config, loader_us, paced=not saturate)
    half = state(low / 2)
    paced = None if saturate else costs.paced_for(config.shards, config.validators)
    high_floor = low_floor = low
    if not saturate and base_floor > 0:
        high_floor = min(throughput, latency_limit(1 + FLOOR_STEP))
        low_floor = min(throughput, latency_limit(1 - FLOOR_STEP))
    moves = [abs(high_floor - low), abs(low_floor - low)]
    sensitivity = (max(moves) / low if low > 0 else (math.inf if max(moves) > 0 else 0.0))
    return SharedPrediction(config, low, top.block_txs, top.cycle_ms, per_tx, per_cycle,
                            half.median_ms, throughput, latency, binding,
                            (f"paced {config.shards} x {config.validators}"
                             + (" (starved: a loaded machine)" if paced.starved else ""))
                            if paced else "composed", top.p99_ms, half.p99_ms,
                            floor if floor_ms is None else LatencyFloor(floor_ms, ()),
                            high_floor, low_floor,
                            sensitivity, sensitivity > ILL_CONDITIONED)


def _slowdown(config: Config) -> float:
    """Nodes per core: a block's processing on a machine all nodes share."""
    return max(1.0, config.shards * config.validators / config.cores)
