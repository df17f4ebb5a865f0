"""Wallet commands, as a user of any chain expects (foundry's ``cast`` is the model):
``shardnet account`` and ``shardnet tx transfer|swap|send-raw`` here, ``shardnet keys``
in scripts/cli/keys.py (it shares the signer options and network helpers below).

A transaction is signed by one of: ``--private-key HEX``, ``--key-file F``, ``--key NAME``
(a key of the local keystore: scripts/cli/keystore.py), or the deterministic testnet
account ``--seed S --index I`` (the default: index 0 of the public seed). ``tx --raw``
with ``--nonce`` and a chain id (``--chain-id``, or the testnet folder's) signs fully
offline. Results go to stdout (one JSON document with ``--json``), progress to stderr,
errors are one line with the exit codes of scripts/cli/exits.py.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from click.core import ParameterSource

from consensus.kernel.codec import U64_MAX, encode
from consensus.kernel.crypto import KeyPair
from consensus.kernel.errors import DecodeError
from scripts.cli.client import ApiFailure, Client
from scripts.cli.exits import CheckFailed, Unreachable, UsageFailure
from scripts.cli.keystore import (
    Keystore,
    StoredKey,
    default_keystore,
    parse_private_key,
    read_key_file,
)
from scripts.cli.params import testnet_option
from scripts.cli.testnet.generate import ASSETS, DEFAULT_SEED
from scripts.cli.testnet.layout import Manifest, TestnetDir
from sharding.accounts import derive_account, parse_address, program_address, shard_of
from sharding.tx import (
    CHAIN_ID_CHARS_MAX,
    Call,
    Swap,
    Transfer,
    TxBody,
    decode_tx,
    sign_tx,
    tx_hash,
)

DEFAULT_TESTNET = Path("testnets/default")
ALWAYS_JSON = "The output is one JSON document on stdout either way (accepted for uniformity)."
FALLBACK_SHARDS = 2  # the default testnet's, when no testnet or network is known
T = TypeVar("T")
U64 = click.IntRange(0, U64_MAX)


def note(message: str) -> None:
    """Human progress: stderr, so stdout stays the result."""
    click.echo(message, err=True)


def _given(name: str) -> bool:
    """True when the option was typed on the command line (not a default or env)."""
    return click.get_current_context().get_parameter_source(name) is ParameterSource.COMMANDLINE


# ---------------------------------------------------------------------------
# The network: --url / SHARDNET_URL, or the testnet folder


def _effective_url(url: str | None) -> str | None:
    """``--url`` wins; ``SHARDNET_URL`` too, unless ``--testnet`` was typed."""
    ctx = click.get_current_context()
    if url and ctx.get_parameter_source("url") is ParameterSource.ENVIRONMENT and _given("testnet"):
        return None
    return url.rstrip("/") if url else None


def _unreachable_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _ask(where: str, request: Callable[[], T]) -> T:
    """One API call: a refusal exits 1, no answer exits 3, each with one line."""
    try:
        return request()
    except ApiFailure as exc:
        raise CheckFailed(f"{where}: {exc}") from None
    except (OSError, ValueError) as exc:  # URLError, refused, timeout, not JSON
        raise Unreachable(f"{where}: no answer ({_unreachable_reason(exc)}): start the "
                          "testnet (shardnet testnet up) or fix --url / SHARDNET_URL") from None


def _manifest(testnet: Path) -> Manifest | None:
    folder = TestnetDir(testnet)
    if not folder.manifest_path.is_file():
        return None
    try:
        return folder.load_manifest()
    except (OSError, msgspec.DecodeError) as exc:
        raise UsageFailure(f"{folder.manifest_path} is not a testnet manifest: {exc}") from None


def _client(url: str | None, testnet: Path) -> Client:
    effective = _effective_url(url)
    if effective:
        return _ask(f"cannot reach {effective}", lambda: Client.from_url(effective))
    if _manifest(testnet) is None:
        raise UsageFailure(f"no testnet at {testnet}: run `shardnet testnet init --testnet "
                           f"{testnet}`, or give --testnet DIR or --url")
    return Client.from_testnet(testnet)


def _known_shards(url: str | None, testnet: Path, *, strict: bool) -> int | None:
    """The network's shard count (``--url``/``SHARDNET_URL``, else the testnet folder);
    None when neither is known. An unreachable URL is an error when ``strict``."""
    effective = _effective_url(url)
    if effective:
        try:
            return _client(url, testnet).num_shards
        except (Unreachable, CheckFailed) as exc:
            if strict:
                raise Unreachable(f"{exc.message} (or give --shards N)") from None
            note(f"shard unknown: {exc.message}")
            return None
    manifest = _manifest(testnet)
    return manifest.shards if manifest else None


network_options = [
    click.option("--url", envvar="SHARDNET_URL",
                 help="API of any node: the rest of the network is found from it "
                 "(GET /v1/network). Default: $SHARDNET_URL (unless --testnet is given)."),
    testnet_option("testnet", default=DEFAULT_TESTNET, help="Local testnet folder."),
]


def with_network(func: Any) -> Any:
    for option in reversed(network_options):
        func = option(func)
    return func


# ---------------------------------------------------------------------------
# Signers


def _asset(text: str) -> int:
    if text.isdigit() and int(text) <= 2**32 - 1:
        return int(text)
    if text.upper() in ASSETS:
        return ASSETS.index(text.upper())
    raise UsageFailure(f"unknown asset {text!r} (known: {', '.join(ASSETS)} or an id)")


def _address(text: str, what: str = "address") -> bytes:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise UsageFailure(f"{what} {text[:80]!r}: {exc} (64 hex digits)") from None


def _read_password(path: Path) -> bytes:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageFailure(f"cannot read --password-file {path}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise UsageFailure(f"--password-file {path}: its first line is empty")
    return lines[0].encode()


def _new_password(password_file: Path | None, encrypt: bool) -> bytes | None:
    if password_file is not None:
        return _read_password(password_file)
    if not encrypt:
        return None
    try:
        text: str = click.prompt("password", hide_input=True, confirmation_prompt=True,
                                 err=True)
    except click.Abort:
        raise UsageFailure("no password given: use --password-file F") from None
    if not text:
        raise UsageFailure("empty password")
    return text.encode()


def _unlock(stored: StoredKey, password_file: Path | None) -> KeyPair:
    if not stored.encrypted:
        return stored.unlock(None)
    if password_file is not None:
        return stored.unlock(_read_password(password_file))
    try:
        text: str = click.prompt(f"password of {stored.name}", hide_input=True, err=True)
    except click.Abort:
        raise UsageFailure(f"{stored.path} is encrypted: give --password-file F") from None
    return stored.unlock(text.encode())


@dataclass(frozen=True, slots=True)
class SignerArgs:
    private_key: str | None
    key_file: Path | None
    key_name: str | None
    keystore: Path | None
    password_file: Path | None
    seed: str
    index: int

    @classmethod
    def pop(cls, options: dict[str, Any]) -> SignerArgs:
        return cls(**{name: options.pop(name) for name in cls.__slots__})

    def chosen(self) -> list[str]:
        """The signer options the user typed (the seed account only when typed)."""
        chosen = [flag for flag, value in (("--private-key", self.private_key),
                                           ("--key-file", self.key_file),
                                           ("--key", self.key_name)) if value is not None]
        if _given("seed") or _given("index"):
            chosen.append("--seed/--index")
        if len(chosen) > 1:
            raise UsageFailure(f"give one signer, not {' and '.join(chosen)}")
        return chosen

    def _stored(self) -> StoredKey | None:
        if self.key_file is not None:
            return read_key_file(self.key_file)
        if self.key_name is not None:
            return Keystore(self.keystore or default_keystore()).get(self.key_name)
        return None

    def key(self) -> KeyPair:
        self.chosen()
        if self.private_key is not None:
            return parse_private_key(self.private_key, "--private-key")
        stored = self._stored()
        if stored is not None:
            return _unlock(stored, self.password_file)
        return derive_account(self.seed, self.index)

    def address(self) -> bytes:
        """The signer's address: a keystore file gives it without its password."""
        self.chosen()
        stored = self._stored() if self.private_key is None else None
        return stored.address if stored is not None else self.key().public_key


keystore_option = click.option(
    "--keystore", type=click.Path(path_type=Path, file_okay=False),
    help="Keystore folder. Default: $SHARDNET_KEYSTORE, else ~/.shardnet/keystore.")
password_file_option = click.option(
    "--password-file", type=click.Path(path_type=Path, dir_okay=False),
    help="A file whose first line is the password of an encrypted key (else asked).")

signer_options = [
    click.option("--private-key", "private_key", metavar="HEX",
                 help="Sign with this Ed25519 private key (64 hex digits). Other local users "
                 "can read a command line: prefer --key or --key-file."),
    click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False),
                 help="Sign with the key in this file: a keystore JSON file or 64 hex digits."),
    click.option("--key", "key_name", metavar="NAME",
                 help="Sign with this key of the keystore (shardnet keys list)."),
    keystore_option,
    password_file_option,
    click.option("--seed", default=DEFAULT_SEED, show_default=True,
                 help="Seed of the deterministic testnet accounts (the default signer)."),
    click.option("--index", type=click.IntRange(0), default=0, show_default=True,
                 help="Index of the deterministic account."),
]


def with_signer(func: Any) -> Any:
    for option in reversed(signer_options):
        func = option(func)
    return func


# ---------------------------------------------------------------------------
# account


@click.command("account")
@click.argument("address", required=False)
@click.option("--txs", "history", is_flag=True,
              help="The account's transactions instead, newest first "
              "(GET /v1/accounts/{address}/txs): sent, received, credited cross-shard.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="With --txs: entries shown.")
@click.option("--before", type=click.IntRange(0, 2**63 - 1), default=None,
              help="With --txs: the page before this cursor (the `more:` line).")
@click.option("--json", "as_json", is_flag=True,
              help="With --txs: the node's JSON page on stdout (the account is always JSON).")
@with_signer
@with_network
def account(address: str | None, history: bool, limit: int, before: int | None,
            as_json: bool, url: str | None, testnet: Path, **signer_args: Any) -> None:
    """Balances, nonce and shard of ADDRESS, or of the signer given (--key NAME,
    --key-file, --private-key, --seed/--index); with --txs its transactions."""
    signer = SignerArgs.pop(signer_args)
    if address is not None and signer.chosen():
        raise UsageFailure("give ADDRESS or a key, not both")
    if address is None and not signer.chosen():
        raise UsageFailure("give an ADDRESS, or a key: --key NAME, --key-file F, "
                           "--private-key HEX or --index I")
    raw = _address(address) if address is not None else signer.address()
    client = _client(url, testnet)
    shard = shard_of(raw, client.num_shards)
    if history:
        from scripts.cli.client import call
        from scripts.cli.explorer import account_txs_lines

        query = f"?limit={limit}" + (f"&before={before}" if before is not None else "")
        page: dict[str, Any] = _ask(f"account txs on shard {shard}", lambda: call(
            "GET", f"{client.url_for(shard)}/v1/accounts/{raw.hex()}/txs{query}"))
        click.echo(json.dumps(page, indent=2) if as_json else "\n".join(account_txs_lines(page)))
        return
    found = _ask(f"account on shard {shard}", lambda: client.account(raw, shard))
    # Lending (issue 18): positions and health factor, from the lending shard.
    lending = _ask("lending position", lambda: defi_lending.find_lending(client, raw))
    if lending is not None:
        found["lending"] = lending
    click.echo(json.dumps(found, indent=2))


# ---------------------------------------------------------------------------
# tx


def _emit(document: dict[str, Any], as_json: bool, line: str) -> None:
    click.echo(json.dumps(document, indent=2) if as_json else line)


def _submit(client: Client, raw: bytes, wait_s: float, as_json: bool) -> None:
    tx = decode_tx(raw)
    digest = tx_hash(tx).hex()
    shard = shard_of(tx.body.sender, client.num_shards)
    doc: dict[str, Any] = {"hash": digest, "shard": shard, "sender": tx.body.sender.hex(),
                           "nonce": tx.body.nonce, "chain_id": tx.body.chain_id}
    def post() -> Any:
        try:
            return client.submit([raw], shard)
        except ApiFailure as exc:
            if "results" in exc.body or exc.status == 400:
                return exc.body  # a refusal at admission: the body says why
            raise

    answer = _ask(f"submitting to shard {shard}", post)
    results = answer.get("results") if isinstance(answer, dict) else None
    result = results[0] if results else answer
    if not result.get("accepted"):
        doc.update(status="rejected", error=result.get("error"), detail=result.get("detail"))
        _emit(doc, as_json, f"rejected {digest}")
        raise CheckFailed(f"rejected: {result.get('error')}: {result.get('detail')}")
    note(f"submitted {digest} to shard {shard}")
    if wait_s <= 0:
        doc["status"] = "submitted"
        _emit(doc, as_json, digest)
        return
    # Waits for `finalized`: for a transaction that leaves its shard, until every
    # receipt it caused has been applied on the other shards.
    final = _ask(f"waiting on shard {shard}", lambda: client.wait_final(digest, shard, wait_s))
    doc.update(final or {"status": "pending"})
    status = str(doc["status"])
    outcome = doc.get("outcome") or {}
    line = f"{status} {digest} shard {shard}"
    if "height" in doc:
        line += f" height {doc['height']} receipts {outcome.get('receipts', 0)}"
    _emit(doc, as_json, line)
    if status == "pending":
        raise CheckFailed(f"still pending after {wait_s:.0f}s: ask again with a longer --wait")
    if status == "committed":
        raise CheckFailed(f"committed on shard {shard} but not finalized after "
                          f"{wait_s:.0f}s: receipts still in flight")
    if status == "failed":
        raise CheckFailed(f"failed: {outcome.get('error')}")
    if status != "finalized":
        raise CheckFailed(f"{status}: {doc.get('error')}: {doc.get('detail')}")


def _offline_chain_id(chain_id: str | None, url: str | None, testnet: Path) -> str | None:
    """The chain id without asking a node: ``--chain-id``, else the testnet folder's
    (when no URL is in play)."""
    if chain_id is not None:
        return chain_id
    if _effective_url(url):
        return None
    manifest = _manifest(testnet)
    return manifest.chain_id if manifest else None


def _sign_and_send(call: Call, options: dict[str, Any]) -> None:
    signer = SignerArgs.pop(options)
    nonce: int | None = options["nonce"]
    chain_id: str | None = options["chain_id"]
    raw_only: bool = options["raw_only"]
    as_json: bool = options["as_json"]
    url: str | None = options["url"]
    testnet: Path = options["testnet"]
    if chain_id is not None and len(chain_id) > CHAIN_ID_CHARS_MAX:
        raise UsageFailure(f"--chain-id is {len(chain_id)} characters; at most "
                           f"{CHAIN_ID_CHARS_MAX}")
    key = signer.key()
    offline_chain = _offline_chain_id(chain_id, url, testnet)
    if raw_only and nonce is not None and offline_chain is not None:
        # Fully offline: no node is contacted.
        _print_raw(TxBody(offline_chain, key.public_key, nonce, call), key, None, as_json)
        return
    client = _client(url, testnet)
    shard = shard_of(key.public_key, client.num_shards)
    if nonce is None:
        found = _ask(f"reading the sender's nonce on shard {shard}",
                     lambda: client.account(key.public_key, shard))
        nonce = int(found["nonce"])
    body = TxBody(chain_id or client.chain_id, key.public_key, nonce, call)
    if raw_only:
        _print_raw(body, key, client.num_shards, as_json)
        return
    _submit(client, encode(sign_tx(key, body)), options["wait_s"], as_json)


def _print_raw(body: TxBody, key: KeyPair, num_shards: int | None, as_json: bool) -> None:
    tx = sign_tx(key, body)
    raw = encode(tx).hex()
    if not as_json:
        click.echo(raw)
        return
    click.echo(json.dumps({
        "raw": raw, "hash": tx_hash(tx).hex(), "sender": body.sender.hex(),
        "nonce": body.nonce, "chain_id": body.chain_id,
        "shard": shard_of(body.sender, num_shards) if num_shards else None}, indent=2))


@click.group("tx")
def tx() -> None:
    """Sign and submit transactions. Stdout: the outcome (one JSON document with --json,
    the signed hex with --raw); progress on stderr. Exit 0 finalized, 1 rejected, failed
    or not final in time, 2 a usage error, 3 no node answers. `tx get HASH` looks one up."""


tx_options = [
    click.option("--nonce", type=click.IntRange(0, U64_MAX - 1),
                 help="Default: the sender's next committed nonce (asks a node)."),
    click.option("--chain-id", help="Sign for this chain. Default: the testnet folder's, "
                 "or the network's (--url)."),
    click.option("--raw", "raw_only", is_flag=True,
                 help="Print the signed tx hex, do not send. With --nonce and a chain id "
                 "(--chain-id or the testnet folder's) no node is contacted."),
    click.option("--wait", "wait_s", type=float, default=30.0, show_default=True,
                 help="Seconds to wait for the outcome (0: do not wait)."),
    click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout."),
]


def with_sender(func: Any) -> Any:
    for option in reversed(tx_options):
        func = option(func)
    return with_network(with_signer(func))


@tx.command("transfer")
@click.option("--to", "to", required=True, help="Recipient address (hex).")
@click.option("--amount", type=U64, required=True)
@click.option("--asset", default="COIN", show_default=True)
@with_sender
def transfer(to: str, amount: int, asset: str, **options: Any) -> None:
    """Transfer AMOUNT of ASSET to an address (on any shard)."""
    _sign_and_send(Transfer(_address(to, "--to"), _asset(asset), amount), options)


@tx.command("swap")
@click.option("--pool", required=True, help="Pool name (COIN-USD) or address.")
@click.option("--asset-in", default="COIN", show_default=True)
@click.option("--amount-in", type=U64, required=True)
@click.option("--min-out", type=U64, default=0, show_default=True)
@with_sender
def swap(pool: str, asset_in: str, amount_in: int, min_out: int, **options: Any) -> None:
    """Swap on a constant-product pool (on any shard)."""
    pool_address = _address(pool, "--pool") if len(pool) >= 64 else program_address(
        pool.upper())
    _sign_and_send(Swap(pool_address, _asset(asset_in), amount_in, min_out), options)


@tx.command("get")
@click.argument("digest", metavar="HASH")
@click.option("--json", "as_json", is_flag=True, help="The node's JSON on stdout.")
@with_network
def tx_get(digest: str, as_json: bool, url: str | None, testnet: Path) -> None:
    """Status, outcome and hops of a transaction (every shard is asked; only the
    sender's knows it). Exit 0 found (whatever its status), 1 unknown to every shard,
    2 not a hash, 3 a shard that could know it did not answer."""
    from scripts.cli.explorer import tx_get as show

    show(digest, as_json, url, testnet)


@tx.command("send-raw")
@click.argument("raw_hex")
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@with_network
def send_raw(raw_hex: str, wait_s: float, as_json: bool, url: str | None,
             testnet: Path) -> None:
    """Submit a signed transaction given as hex (from --raw)."""
    try:
        raw = bytes.fromhex(raw_hex.strip().removeprefix("0x"))
        decode_tx(raw)
    except (ValueError, DecodeError) as exc:
        raise UsageFailure(f"not a signed transaction: {exc}") from None
    _submit(_client(url, testnet), raw, wait_s, as_json)


# DeFi calls live in their own modules, which add their commands to ``tx`` (issue 18).
from scripts.cli import defi_farms, defi_lending  # noqa: E402, F401
