"""What one transaction, one block and one message cost here: the projection's inputs.

``shardnet project calibrate`` measures them on this machine and writes them as JSON;
``load_costs`` reads such a file back (validated: a file is input like any other). All
CPU figures are process CPU time (user + system), which other work on a shared machine
disturbs much less than wall time; the load average at calibration is recorded beside.

Two sources:

* in-process, the benchmarks' own code (``scripts/bench``): one Ed25519 verification and
  one signature; the ledger's signature / execution / state-root / storage split of a
  2,000-transaction block (``bench ledger``); CPU per PBFT message handled and messages
  per commit (``bench consensus``); wire sizes of a transaction, a receipt, a vote.
* a real 1 x 4 testnet of local processes (``bench node``'s loader, pre-signed
  transfers): the CPU of every node process tree over an idle window, a window paced at
  100 tx/s (small blocks) and a burst (full blocks), fitted to
  ``cpu = idle x time + per_tx x txs + per_block x blocks`` per node;
  the p2p bytes each node sent per transaction and per block; the loader's CPU per
  transaction. What the per-transaction node CPU holds beyond the in-process parts is
  ``shell_tx_us`` (HTTP decoding, mempool, forwarding, p2p framing and encryption, the
  event loop); beyond the PBFT steps per block, ``shell_block_us`` (block
  announcements, events, the p2p thread's framing of votes).
* a real 2 x 4 testnet, the same paced load from shard 0 twice, local transfers then
  cross-shard only: per node, the CPU a cross-shard transaction costs beyond a local one
  at its source (receipts, bundles, relaying, finality tracking) and at its destination
  (the pulled or pushed bundle, its certificate and proofs checked, the receipt applied):
  ``cross_source_us``, ``cross_destination_us``. In its local windows shard 0 alone has
  load: the CPU shard 1's nodes spend beyond their idle share per shard-0 block is
  ``foreign_block_us`` (the gossiped announcement, its certificate checked, its
  forwarding), which every node pays for every block of every other shard (format 2
  measured it the same way; format-3 files before 2026-12-02 hold the paced 2 x 4
  cycle less the 1 x 4 one instead).
* real 1 x 4 and 2 x 4 testnets at paced rates (local transfers into every shard, as
  ``bench e2e``'s find-max steps offer them; windows of >= 10 s, medians of >= 3): per
  node, CPU per transaction and per cycle (``paced``). Each window's submit-to-commit p50 and p99
  (the paced rows' ``points``, with the machine's ``cores``) is what the shared-machine
  model's latency floor is calibrated on (still format 3: files without them are read,
  and their model has no floor term). The 2 x 4 run also offers a mixed window per rep
  (400 tx/s, every fifth transfer to the other shard): its p99 (``cross_points``)
  calibrates the floor's cross-shard term (files without it: the same floor at every
  share).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import msgspec

COSTS_FORMAT = 3  # 2: the measured cross-shard costs; 3: the paced testnet costs
FORMATS_READ = (2, 3)  # a format-2 file (no paced costs) is still judged as recorded

Us = Annotated[float, msgspec.Meta(ge=0, le=10_000_000)]
Bytes = Annotated[float, msgspec.Meta(ge=0, le=1 << 30)]


class CostsError(ValueError):
    """A costs file that cannot be used, with what is wrong."""


class MessageCost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    replicas: Annotated[int, msgspec.Meta(ge=4, le=1000)]
    step_us: Us  # CPU of Replica.step on one received message, real Ed25519
    messages_per_commit: Annotated[float, msgspec.Meta(ge=0, le=1e6)]  # all replicas


class PacedCost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A node of a shards x validators testnet on this machine at paced rates (the
    find-max's steps): its CPU share = idle + cycle x blocks/s + tx x its shard's rate."""

    shards: Annotated[int, msgspec.Meta(ge=1, le=64)]
    validators: Annotated[int, msgspec.Meta(ge=4, le=1000)]
    tx_us: Us  # node CPU per transaction of its shard
    cycle_us: Us  # node CPU per cycle (its shard's block, the other shards' announcements)
    idle_cpu_share: Annotated[float, msgspec.Meta(ge=0, le=4)]
    blocks_per_s: Annotated[float, msgspec.Meta(ge=0, le=10_000)]  # per shard, measured
    starved: bool = False  # far fewer blocks than the interval cuts: a loaded machine
    load_average: list[float] = []  # when measured
    # the machine's cores when measured (0: not recorded, files before the latency floor)
    cores: Annotated[float, msgspec.Meta(ge=0, le=4096)] = 0.0
    # per rate: medians of the windows (rate, shard_rate, node_cpu_share, blocks_per_s;
    # since the latency floor also commit_p50_ms and commit_p99_ms: submit-to-commit of
    # the paced windows, what ``model.latency_floor`` calibrates on; absent in older
    # files, whose model then has no floor term)
    points: list[dict[str, float]] = []
    idle_window: dict[str, Any] = {}
    windows: list[dict[str, Any]] = []
    # since the cross-shard latency term (2 x 4 only): the mixed windows' medians at one
    # rate, local transfers with a share ``cross`` to the next shard (rate, cross,
    # shard_rate, node_cpu_share, blocks_per_s, commit_p50_ms, commit_p99_ms): what
    # ``model.latency_floor`` calibrates the cross-shard term on; absent in older files,
    # whose floor is then the same at every share
    cross_points: list[dict[str, float]] = []
    cross_windows: list[dict[str, Any]] = []


class Costs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per validator unless the name says otherwise; µs of CPU, bytes."""

    format: Annotated[int, msgspec.Meta(ge=FORMATS_READ[0], le=COSTS_FORMAT)]
    # in-process
    verify_us: Us  # one Ed25519 verification, one core
    sign_us: Us  # one Ed25519 signature (the load generator's)
    execution_us: Us  # per tx, the sequential spec (transfers)
    state_root_us: Us  # per tx, State.prepare + apply of the write set
    storage_us: Us  # per tx, the block's commit into SQLite (WAL, synchronous=FULL)
    consensus: list[MessageCost]  # at least one entry (n = 4)
    tx_bytes: Bytes  # one signed transfer on the wire
    receipt_bytes: Bytes  # one receipt with its Merkle proof (no certificate)
    certificate_bytes_per_signer: Bytes  # a commit certificate's bytes per signature
    # from the 1 x 4 testnet
    shell_tx_us: Us  # node CPU per tx beyond verify + execution + root + storage
    shell_block_us: Us  # node CPU per block beyond the PBFT steps
    # node CPU per block of another shard (its gossiped announcement, relay, events):
    # shard 1's nodes with load on shard 0 only (format 2, and format 3 since
    # 2026-12-02; format-3 files before: the paced 2 x 4 cycle less the 1 x 4 one)
    foreign_block_us: Us
    # from the 2 x 4 testnet: node CPU per cross-shard tx beyond a local tx, per node
    cross_source_us: Us  # at each validator of the source shard
    cross_destination_us: Us  # at each validator of the destination shard
    idle_cpu_share: Annotated[float, msgspec.Meta(ge=0, le=4)]  # node CPU / wall, no load
    loader_submit_us: Us  # loader CPU per pre-signed tx (HTTP batches)
    p2p_bytes_per_tx: Bytes  # sent by the busiest node (the primary), n = 4
    p2p_bytes_per_block: Bytes  # sent by the busiest node, n = 4
    # format 3: the paced testnets (1 x 4 and 2 x 4), what the shared-machine model of
    # the find-max uses for their configurations
    paced: list[PacedCost] = []
    # what was measured where (not used by the model)
    measured: dict[str, Any] = {}

    def paced_for(self, shards: int, validators: int) -> PacedCost | None:
        """The paced costs measured for this testnet shape, if any."""
        for row in self.paced:
            if row.shards == shards and row.validators == validators:
                return row
        return None

    def message(self, replicas: int) -> tuple[float, float]:
        """(CPU µs per message, messages per commit per replica) at ``replicas``:
        the nearest measured n, messages scaled linearly in n (each replica hears
        O(n) votes per phase)."""
        row = min(self.consensus, key=lambda r: abs(r.replicas - replicas))
        per_replica = row.messages_per_commit / row.replicas
        return row.step_us, per_replica * (replicas - 1) / (row.replicas - 1)


def load_costs(path: Path) -> Costs:
    """The costs in ``path`` (JSON); ``CostsError`` saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CostsError(f"{path}: cannot read: {exc.strerror}") from None
    return decode_costs(data, str(path))


def decode_costs(data: bytes, where: str = "costs") -> Costs:
    try:
        costs = msgspec.json.decode(data, type=Costs)
    except msgspec.ValidationError as exc:
        raise CostsError(f"{where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise CostsError(f"{where}: not JSON: {exc}") from None
    if not costs.consensus:
        raise CostsError(f"{where}: `$.consensus` is empty (one entry per measured n)")
    if costs.format >= 3 and (costs.paced_for(1, 4) is None or costs.paced_for(2, 4) is None):
        raise CostsError(f"{where}: `$.paced` needs the 1 x 4 and 2 x 4 rows (format 3)")
    return costs


def encode_costs(costs: Costs) -> str:
    return json.dumps(msgspec.to_builtins(costs), indent=2) + "\n"
