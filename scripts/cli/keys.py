"""``shardnet keys [new|import|list|show]``: the local keystore and the deterministic
testnet accounts (split from scripts/cli/wallet.py, whose signer options and network
helpers it shares).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from consensus.kernel.crypto import KeyPair
from scripts.cli.exits import UsageFailure
from scripts.cli.keystore import (
    Keystore,
    StoredKey,
    check_name,
    default_keystore,
    parse_private_key,
    read_key_file,
)
from scripts.cli.params import json_option
from scripts.cli.testnet.generate import DEFAULT_SEED
from scripts.cli.wallet import (
    ALWAYS_JSON,
    FALLBACK_SHARDS,
    _known_shards,
    _new_password,
    _unlock,
    keystore_option,
    note,
    password_file_option,
    with_network,
)
from sharding.accounts import derive_account, shard_of


def _key_row(stored: StoredKey, shards: int | None) -> dict[str, Any]:
    return {"name": stored.name, "address": stored.address.hex(),
            "shard": shard_of(stored.address, shards) if shards else None,
            "num_shards": shards, "encrypted": stored.encrypted, "path": str(stored.path)}


@click.group("keys", invoke_without_command=True)
@click.option("--seed", default=DEFAULT_SEED, show_default=True)
@click.option("--index", type=click.IntRange(0), default=0, show_default=True)
@click.option("--shards", type=click.IntRange(1), default=None,
              help="Shard count for the 'shard' field. Default: the testnet's (--url / "
              f"SHARDNET_URL, else the --testnet folder); {FALLBACK_SHARDS} when neither "
              "is there.")
@with_network
@json_option(ALWAYS_JSON)
@click.pass_context
def keys(ctx: click.Context, seed: str, index: int, shards: int | None, url: str | None,
         testnet: Path, as_json: bool) -> None:
    """Without a subcommand: address, shard and private key of the deterministic
    account INDEX of SEED (the testnet's funded accounts). The subcommands manage a local
    keystore: new, import, list, show."""
    if ctx.invoked_subcommand is not None:
        return
    if shards is None:
        shards = _known_shards(url, testnet, strict=True)
    if shards is None:
        shards = FALLBACK_SHARDS
        note(f"shard: of {FALLBACK_SHARDS} shards (no testnet at {testnet}; give --testnet, "
             "--url or --shards)")
    key = derive_account(seed, index)
    click.echo(json.dumps({"seed": seed, "index": index, "address": key.public_key.hex(),
                           "shard": shard_of(key.public_key, shards), "num_shards": shards,
                           "private_key": key.private_bytes.hex()}, indent=2))


def _store(key: KeyPair, name: str | None, keystore: Path | None, password_file: Path | None,
           encrypt: bool, as_json: bool, verb: str) -> None:
    name = check_name(name) if name else f"key-{key.public_key.hex()[:8]}"
    store = Keystore(keystore or default_keystore())
    stored = store.add(key, name, _new_password(password_file, encrypt))
    row = _key_row(stored, None)
    del row["shard"], row["num_shards"]
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"{verb} {stored.name}: {stored.address.hex()}")
    note(f"saved in {stored.path} (owner-only, "
         + ("encrypted)" if stored.encrypted else "plaintext: fine for a testnet, or use "
            "--password-file / --encrypt)"))


new_key_options = [
    click.option("--name", help="Key name (default: key-<first 8 hex of the address>)."),
    keystore_option,
    password_file_option,
    click.option("--encrypt", is_flag=True,
                 help="Encrypt with a password asked on the terminal. Without this or "
                 "--password-file the key is stored in plain hex (owner-only file): "
                 "acceptable for a testnet, not for value."),
    click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout."),
]


def with_new_key(func: Any) -> Any:
    for option in reversed(new_key_options):
        func = option(func)
    return func


@keys.command("new")
@with_new_key
def keys_new(name: str | None, keystore: Path | None, password_file: Path | None,
             encrypt: bool, as_json: bool) -> None:
    """Generate a random key into the keystore; prints its name and address. Stored in
    plain hex (owner-only file: fine for a testnet) unless --password-file or --encrypt."""
    _store(KeyPair.generate(), name, keystore, password_file, encrypt, as_json, "created")


@keys.command("import")
@click.argument("private_key", metavar="[HEX]", required=False)
@click.option("--file", "key_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the key from this file (64 hex digits, or a keystore JSON file).")
@with_new_key
def keys_import(private_key: str | None, key_file: Path | None, name: str | None,
                keystore: Path | None, password_file: Path | None, encrypt: bool,
                as_json: bool) -> None:
    """Import a private key (HEX, --file F, or asked on the terminal when neither)."""
    if private_key is not None and key_file is not None:
        raise UsageFailure("give HEX or --file, not both")
    if key_file is not None:
        stored = read_key_file(key_file)
        key = _unlock(stored, password_file if stored.encrypted else None)
    else:
        if private_key is None:
            try:
                private_key = str(click.prompt("private key (hex)", hide_input=True, err=True))
            except click.Abort:
                raise UsageFailure("no key given: HEX, --file F or on the terminal") from None
        key = parse_private_key(private_key)
    _store(key, name, keystore, password_file, encrypt, as_json, "imported")


@keys.command("list")
@keystore_option
@click.option("--shards", type=click.IntRange(1), default=None,
              help="Shard count for the 'shard' column. Default: the testnet's, if known.")
@with_network
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
def keys_list(keystore: Path | None, shards: int | None, url: str | None, testnet: Path,
              as_json: bool) -> None:
    """Keys of the keystore: name, address, shard in the current testnet (if known)."""
    store = Keystore(keystore or default_keystore())
    store.require()
    if shards is None:
        shards = _known_shards(url, testnet, strict=False)
    rows = [_key_row(stored, shards) for stored in store.list()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        note(f"no keys in {store.root}: shardnet keys new")
    for row in rows:
        shard = "?" if row["shard"] is None else str(row["shard"])
        flag = "encrypted" if row["encrypted"] else "plaintext"
        click.echo(f"{row['name']:<24} {row['address']}  shard {shard:>2}  {flag}")


@keys.command("show")
@click.argument("name")
@keystore_option
@password_file_option
@click.option("--reveal", is_flag=True, help="Include the private key (decrypts it).")
@click.option("--shards", type=click.IntRange(1), default=None,
              help="Shard count for the 'shard' field. Default: the testnet's, if known.")
@with_network
@json_option(ALWAYS_JSON)
def keys_show(name: str, keystore: Path | None, password_file: Path | None, reveal: bool,
              shards: int | None, url: str | None, testnet: Path, as_json: bool) -> None:
    """One key of the keystore as JSON (the private key only with --reveal)."""
    stored = Keystore(keystore or default_keystore()).get(name)
    if shards is None:
        shards = _known_shards(url, testnet, strict=False)
    row = _key_row(stored, shards)
    if reveal:
        row["private_key"] = _unlock(stored, password_file).private_bytes.hex()
    click.echo(json.dumps(row, indent=2))
