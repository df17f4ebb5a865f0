"""``shardnet ledger-demo``: the ledger end to end on two shards, in memory.

(``make demo`` is the other demo: a real testnet, load and status. ``shardnet demo``,
this command's old name, now only says so.)

Builds a 2-shard genesis, signs a block of transfers and swaps on shard 0
(local and cross-shard, one of them failing on slippage and one refunded), lets
a replica re-execute it, applies the receipts it emitted on shard 1, brings the
swap outputs and refunds home, and prints roots, outcomes, balances and the audit.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from consensus.kernel.crypto import KeyPair
from scripts.cli.exits import CheckFailed, UsageFailure
from scripts.cli.params import json_option
from sharding.accounts import derive_account, shard_of
from sharding.audit import compute_audit
from sharding.block import GENESIS_PREV_HASH, Block, block_hash
from sharding.executor import (
    BlockResult,
    TxOutcome,
    apply_block,
    build_block,
    commit_block_result,
)
from sharding.genesis import (
    Genesis,
    genesis_state,
    get_group_addresses,
    load_genesis,
    make_genesis_dict,
    total_supply,
)
from sharding.receipts import RECEIPT_KINDS, Receipt
from sharding.records import get_balance
from sharding.state import State
from sharding.tx import Swap, Transfer, TxBody, sign_tx

SEED = "demo"


def short(data: bytes) -> str:
    return data.hex()[:12]


class Demo:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.genesis: Genesis = load_genesis(
            make_genesis_dict(
                chain_id="shardnet-demo",
                num_shards=2,
                seed=SEED,
                accounts=8,
                balance=1_000_000,
                pool_reserve=50_000_000,
            )
        )
        self.states: dict[int, State] = {s: genesis_state(self.genesis, s) for s in (0, 1)}
        self.heights = {0: 0, 1: 0}
        self.prev = {0: GENESIS_PREV_HASH, 1: GENESIS_PREV_HASH}
        self.emitted: list[Receipt] = []
        self.inboxes: dict[int, list[Receipt]] = {0: [], 1: []}
        self.blocks: list[tuple[Block, BlockResult]] = []

    def keys_on(self, shard: int) -> list[KeyPair]:
        return [
            derive_account(SEED, i)
            for i, address in enumerate(get_group_addresses(SEED, 8))
            if shard_of(address, 2) == shard
        ]

    def pool_on(self, shard: int) -> bytes:
        return next(p.address for p in self.genesis.pools if shard_of(p.address, 2) == shard)

    def commit(self, shard: int, txs: list[TxBody], keys: dict[bytes, KeyPair]) -> BlockResult:
        signed = [sign_tx(keys[body.sender], body) for body in txs]
        state = self.states[shard]
        self.heights[shard] += 1
        block, result, rejected = build_block(
            state,
            signed,
            self.inboxes[shard],
            height=self.heights[shard],
            view=0,
            prev_hash=self.prev[shard],
            time_ms=1_700_000_000_000 + self.heights[shard],
            proposer=0,
        )
        # A replica re-executes the proposal and checks every root in its header.
        replica = apply_block(state, block)
        if replica != result or rejected:
            raise click.ClickException("the replica's result differs from the proposer's")
        commit_block_result(state, result)
        self.prev[shard] = block_hash(block)
        applied = {(r.src_shard, r.seq) for r in block.inbound}
        self.inboxes[shard] = [
            r for r in self.inboxes[shard] if (r.src_shard, r.seq) not in applied
        ]
        for receipt in result.receipts:
            self.inboxes[receipt.dst_shard].append(receipt)
        self.emitted.extend(result.receipts)
        self.blocks.append((block, result))
        self.print_block(block, result)
        return result

    def print_block(self, block: Block, result: BlockResult) -> None:
        h = block.header
        table = Table(title=f"shard {h.shard} block {h.height}  hash {short(block_hash(block))}")
        table.add_column("#")
        table.add_column("item")
        table.add_column("outcome")
        for i, (receipt, applied) in enumerate(
            zip(block.inbound, result.inbound_outcomes, strict=True)
        ):
            table.add_row(
                f"in{i}",
                f"receipt {receipt.src_shard}->{receipt.dst_shard} seq {receipt.seq} "
                f"{RECEIPT_KINDS[receipt.kind]} {receipt.amount} of "
                f"{self.genesis.asset_name(receipt.asset)}",
                "ok" if applied.ok else f"[yellow]{applied.error}[/] (refunded)",
            )
        for i, (tx, outcome) in enumerate(zip(block.txs, result.outcomes, strict=True)):
            table.add_row(
                str(i),
                self.describe(tx.body),
                self.describe_outcome(outcome),
            )
        for receipt in result.receipts:
            table.add_row(
                "out",
                f"receipt {receipt.src_shard}->{receipt.dst_shard} seq {receipt.seq} "
                f"{RECEIPT_KINDS[receipt.kind]} {receipt.amount} of "
                f"{self.genesis.asset_name(receipt.asset)}",
                "emitted",
            )
        self.console.print(table)
        self.console.print(
            f"  tx_root {short(h.tx_root)}  inbound_root {short(h.inbound_root)}  "
            f"receipts_root {short(h.receipts_root)}  state_root {short(h.state_root)}  "
            f"writes {len(result.writes)}"
        )

    @staticmethod
    def describe_outcome(outcome: TxOutcome) -> str:
        if not outcome.ok:
            return f"[red]failed: {outcome.error}[/] (nonce consumed)"
        return "ok, debited; receipt emitted" if outcome.receipts else "ok"

    def describe(self, body: TxBody) -> str:
        call = body.call
        who = short(body.sender)[:8]
        if isinstance(call, Transfer):
            where = shard_of(call.to, 2)
            return (
                f"{who} transfer {call.amount} {self.genesis.asset_name(call.asset)} "
                f"-> {short(call.to)[:8]} (shard {where})"
            )
        if isinstance(call, Swap):
            return (
                f"{who} swap {call.amount_in} {self.genesis.asset_name(call.asset_in)} "
                f"min_out {call.min_out} in pool on shard {shard_of(call.pool, 2)}"
            )
        return f"{who} {type(call).__name__}"

    def run(self) -> bool:
        g = self.genesis
        a0, b0 = self.keys_on(0)[:2]
        (a1,) = self.keys_on(1)[:1]
        keys = {k.public_key: k for k in (a0, b0, a1)}
        coin, usd = g.assets["COIN"], g.assets["USD"]
        pool0, pool1 = self.pool_on(0), self.pool_on(1)
        chain = g.chain_id
        self.console.rule("[bold]shardnet ledger demo: 2 shards, in memory")
        self.console.print(
            f"chain {chain}; accounts a0, b0 on shard 0 and a1 on shard 1; "
            f"pool {short(pool0)} on shard 0, pool {short(pool1)} on shard 1"
        )
        self.commit(
            0,
            [
                TxBody(chain, a0.public_key, 0, Transfer(b0.public_key, coin, 1_000)),
                TxBody(chain, a0.public_key, 1, Transfer(a1.public_key, coin, 2_500)),
                TxBody(chain, b0.public_key, 0, Swap(pool0, coin, 10_000, 9_000)),
                TxBody(chain, b0.public_key, 1, Swap(pool0, usd, 10_000, 10_000)),
                TxBody(chain, a0.public_key, 2, Swap(pool1, coin, 20_000, 19_000)),
                TxBody(chain, a0.public_key, 3, Swap(pool1, usd, 5_000, 10**9)),
            ],
            keys,
        )
        self.commit(
            1, [TxBody(chain, a1.public_key, 0, Transfer(b0.public_key, usd, 700))], keys
        )
        self.commit(0, [], keys)
        self.print_balances({"a0": a0, "b0": b0, "a1": a1})
        return self.print_audit()

    def print_balances(self, named: dict[str, KeyPair]) -> None:
        table = Table(title="balances after the receipts have been applied")
        table.add_column("account")
        table.add_column("shard")
        for name in self.genesis.assets:
            table.add_column(name, justify="right")
        for name, key in named.items():
            shard = shard_of(key.public_key, 2)
            state = self.states[shard]
            table.add_row(
                name,
                str(shard),
                *(
                    f"{get_balance(state, key.public_key, asset):,}"
                    for asset in self.genesis.assets.values()
                ),
            )
        self.console.print(table)

    def print_audit(self) -> bool:
        report = compute_audit(self.states, self.emitted, total_supply(self.genesis))
        table = Table(title=f"audit (PROTOCOL.md 6): {report.in_flight_receipts} in flight")
        for column in ("asset", "balances", "pool reserves", "in flight", "total", "genesis", ""):
            table.add_column(column, justify="right")
        for row in report.assets:
            table.add_row(
                self.genesis.asset_name(row.asset),
                f"{row.balances:,}",
                f"{row.reserves:,}",
                f"{row.in_flight:,}",
                f"{row.total:,}",
                f"{row.supply:,}",
                "[green]ok[/]" if row.ok else "[red]MISMATCH[/]",
            )
        self.console.print(table)
        for shard, state in self.states.items():
            self.console.print(
                f"shard {shard}: height {self.heights[shard]}  state_root {state.root.hex()}"
            )
        return report.ok and report.in_flight_receipts == 0


@click.command("ledger-demo")
@json_option("The outcome as JSON on stdout: ok, and per shard its height and state "
             "root (the walk-through goes to stderr).")
def ledger_demo(as_json: bool) -> None:
    """Walk through the ledger in memory (no nodes): sign and apply blocks of transfers
    and swaps on 2 shards, carry cross-shard receipts; print roots and the audit."""
    console = Console(stderr=as_json)
    walk = Demo(console)
    ok = walk.run()
    if as_json:
        click.echo(json.dumps({"ok": ok, "shards": {
            str(shard): {"height": walk.heights[shard], "state_root": state.root.hex()}
            for shard, state in walk.states.items()}}, indent=2))
    if not ok:
        raise CheckFailed("audit failed")


@click.command("demo", hidden=True, context_settings={"ignore_unknown_options": True,
                                                      "allow_extra_args": True})
def demo_moved() -> None:
    """Old name of ledger-demo: says where things are."""
    raise UsageFailure("`shardnet demo` was renamed: the in-memory ledger walk-through is "
                       "`shardnet ledger-demo`; the testnet demo is `make demo` (testnet up, "
                       "load, status)")
