"""Wallet commands, as a user of any chain expects (foundry's ``cast`` is the model):
``shardnet keys``, ``shardnet account``, ``shardnet tx transfer|swap|send-raw``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from consensus.kernel.codec import encode
from consensus.kernel.errors import DecodeError
from scripts.cli.client import ApiFailure, Client
from scripts.cli.testnet.generate import ASSETS, DEFAULT_SEED
from sharding.accounts import derive_account, parse_address, program_address, shard_of
from sharding.tx import Call, Swap, Transfer, TxBody, decode_tx, sign_tx, tx_hash

DEFAULT_TESTNET = Path("testnets/default")


def _client(url: str | None, testnet: Path) -> Client:
    try:
        return Client.from_url(url) if url else Client.from_testnet(testnet)
    except (FileNotFoundError, ApiFailure, OSError) as exc:
        raise click.ClickException(f"cannot reach the testnet: {exc}") from None


def _asset(text: str) -> int:
    if text.isdigit():
        return int(text)
    if text.upper() in ASSETS:
        return ASSETS.index(text.upper())
    raise click.BadParameter(f"unknown asset {text!r} (known: {', '.join(ASSETS)} or an id)")


def _address(text: str) -> bytes:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


network_options = [
    click.option("--url", envvar="SHARDNET_URL",
                 help="API of any node: the rest of the network is found from it "
                 "(GET /v1/network). Default: $SHARDNET_URL."),
    click.option("--testnet", "testnet", type=click.Path(path_type=Path),
                 default=DEFAULT_TESTNET, show_default=True, help="Local testnet folder."),
]


def with_network(func: Any) -> Any:
    for option in reversed(network_options):
        func = option(func)
    return func


@click.command("keys")
@click.option("--seed", default=DEFAULT_SEED, show_default=True)
@click.option("--index", type=int, default=0, show_default=True)
@click.option("--shards", type=int, default=2, show_default=True)
def keys(seed: str, index: int, shards: int) -> None:
    """Address, shard and private key of a deterministic account."""
    key = derive_account(seed, index)
    click.echo(json.dumps({"seed": seed, "index": index, "address": key.public_key.hex(),
                           "shard": shard_of(key.public_key, shards),
                           "private_key": key.private_bytes.hex()}, indent=2))


@click.command("account")
@click.argument("address")
@with_network
def account(address: str, url: str | None, testnet: Path) -> None:
    """Balances, nonce and shard of ADDRESS."""
    client = _client(url, testnet)
    raw = _address(address)
    shard = shard_of(raw, client.num_shards)
    try:
        found = client.account(raw, shard)
    except ApiFailure as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(found, indent=2))


def _submit(client: Client, raw: bytes, wait_s: float) -> None:
    tx = decode_tx(raw)
    digest = tx_hash(tx).hex()
    shard = shard_of(tx.body.sender, client.num_shards)
    try:
        answer = client.submit([raw], shard)
    except ApiFailure as exc:
        raise click.ClickException(str(exc)) from None
    result = answer["results"][0] if "results" in answer else answer
    if not result.get("accepted"):
        raise click.ClickException(f"rejected: {result.get('error')}: {result.get('detail')}")
    click.echo(f"submitted {digest} to shard {shard}")
    if wait_s <= 0:
        return
    # Waits for `finalized`: for a transaction that leaves its shard, until every
    # receipt it caused has been applied on the other shards.
    final = client.wait_final(digest, shard, wait_s)
    if final is None or final["status"] == "pending":
        raise click.ClickException(f"still pending after {wait_s:.0f}s")
    click.echo(json.dumps(final, indent=2))
    if final["status"] == "committed":
        raise click.ClickException(f"committed on shard {shard} but not finalized after "
                                   f"{wait_s:.0f}s: receipts still in flight")
    if final["status"] != "finalized":
        raise SystemExit(1)


def _sign_and_send(seed: str, index: int, call: Call, nonce: int | None, raw_only: bool,
                   wait_s: float, url: str | None, testnet: Path) -> None:
    key = derive_account(seed, index)
    client = _client(url, testnet)
    shard = shard_of(key.public_key, client.num_shards)
    if nonce is None:
        try:
            nonce = int(client.account(key.public_key, shard)["nonce"])
        except ApiFailure as exc:
            raise click.ClickException(f"cannot read the sender's nonce: {exc}") from None
    body = TxBody(client.chain_id, key.public_key, nonce, call)
    raw = encode(sign_tx(key, body))
    if raw_only:
        click.echo(raw.hex())
        return
    _submit(client, raw, wait_s)


@click.group("tx")
def tx() -> None:
    """Sign and submit transactions."""


sender_options = [
    click.option("--seed", default=DEFAULT_SEED, show_default=True, help="Sender's seed."),
    click.option("--index", type=int, default=0, show_default=True, help="Sender's index."),
    click.option("--nonce", type=int, help="Default: the sender's next committed nonce."),
    click.option("--raw", "raw_only", is_flag=True, help="Print the signed tx hex, do not send."),
    click.option("--wait", "wait_s", type=float, default=30.0, show_default=True,
                 help="Seconds to wait for the outcome (0: do not wait)."),
]


def with_sender(func: Any) -> Any:
    for option in reversed(sender_options):
        func = option(func)
    return with_network(func)


@tx.command("transfer")
@click.option("--to", "to", required=True, help="Recipient address (hex).")
@click.option("--amount", type=int, required=True)
@click.option("--asset", default="COIN", show_default=True)
@with_sender
def transfer(to: str, amount: int, asset: str, seed: str, index: int, nonce: int | None,
             raw_only: bool, wait_s: float, url: str | None, testnet: Path) -> None:
    """Transfer AMOUNT of ASSET to an address (on any shard)."""
    _sign_and_send(seed, index, Transfer(_address(to), _asset(asset), amount), nonce, raw_only,
                   wait_s, url, testnet)


@tx.command("swap")
@click.option("--pool", required=True, help="Pool name (COIN-USD) or address.")
@click.option("--asset-in", default="COIN", show_default=True)
@click.option("--amount-in", type=int, required=True)
@click.option("--min-out", type=int, default=0, show_default=True)
@with_sender
def swap(pool: str, asset_in: str, amount_in: int, min_out: int, seed: str, index: int,
         nonce: int | None, raw_only: bool, wait_s: float, url: str | None,
         testnet: Path) -> None:
    """Swap on a constant-product pool (on any shard)."""
    pool_address = _address(pool) if len(pool) == 64 else program_address(pool.upper())
    _sign_and_send(seed, index, Swap(pool_address, _asset(asset_in), amount_in, min_out), nonce,
                   raw_only, wait_s, url, testnet)


@tx.command("send-raw")
@click.argument("raw_hex")
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True)
@with_network
def send_raw(raw_hex: str, wait_s: float, url: str | None, testnet: Path) -> None:
    """Submit a signed transaction given as hex (from --raw)."""
    try:
        raw = bytes.fromhex(raw_hex.removeprefix("0x"))
        decode_tx(raw)
    except (ValueError, DecodeError) as exc:
        raise click.ClickException(f"not a signed transaction: {exc}") from None
    _submit(_client(url, testnet), raw, wait_s)
