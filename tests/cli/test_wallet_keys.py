"""Wallet parity with foundry's ``cast`` (issue 17, deliverable 5): a local keystore
(``keys new|import|list|show``), signing with one's own key (``--private-key``,
``--key-file``, ``--key NAME``), fully offline ``tx --raw --nonce --chain-id``,
``keys`` reading the shard count from the testnet, ``--json`` as the only stdout, and
one-line errors with the exit codes of scripts/cli/exits.py."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import scripts.cli.client as client_module
from consensus.kernel.crypto import KeyPair
from scripts.cli import exits
from scripts.cli.main import main
from scripts.cli.testnet.generate import TestnetSpec, generate
from sharding.accounts import derive_account, shard_of
from sharding.tx import check_tx_stateless, decode_tx, tx_hash, verify_tx_signature

CLOSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens
KEY_HEX = "42" * 32
RECIPIENT = derive_account("shardnet", 1).public_key.hex()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A keystore of this test only, no URL from the environment, and a working directory
    without a testnets/default folder."""
    keystore = tmp_path / "keystore"
    monkeypatch.setenv("SHARDNET_KEYSTORE", str(keystore))
    monkeypatch.delenv("SHARDNET_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return keystore


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], result.stderr


def no_sockets(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and refuse) every connection attempt."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


# ---------------------------------------------------------------------------
# keystore


def test_keys_new_import_list_show_round_trip(isolated: Path) -> None:
    created = run("keys", "new", "--name", "alice", "--json")
    assert created.exit_code == 0, created.output
    alice = json.loads(created.stdout)
    imported = run("keys", "import", KEY_HEX, "--name", "bob", "--json")
    assert imported.exit_code == 0, imported.output
    bob = json.loads(imported.stdout)
    assert bob["address"] == KeyPair(bytes.fromhex(KEY_HEX)).public_key.hex()
    assert not alice["encrypted"] and not bob["encrypted"]
    # Owner-only folder and files.
    assert stat.S_IMODE(isolated.stat().st_mode) == 0o700
    for name in ("alice", "bob"):
        assert stat.S_IMODE((isolated / f"{name}.json").stat().st_mode) == 0o600
    listed = run("keys", "list", "--json", "--shards", "4")
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"alice", "bob"}
    assert rows["bob"]["shard"] == shard_of(bytes.fromhex(bob["address"]), 4)
    assert rows["alice"]["address"] == alice["address"]
    shown = run("keys", "show", "bob", "--reveal")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["private_key"] == KEY_HEX
    # Without --reveal, the private key stays in the file.
    assert "private_key" not in json.loads(run("keys", "show", "alice").stdout)
    # The same address twice is refused, as is a taken name.
    one_line_error(run("keys", "import", KEY_HEX, "--name", "carol"), exits.USAGE, "'bob'")
    one_line_error(run("keys", "new", "--name", "alice"), exits.USAGE, "exists already")


def test_keys_import_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "key.hex").write_text("0x" + KEY_HEX + "\n")
    result = run("keys", "import", "--file", str(tmp_path / "key.hex"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "key-" + KeyPair(
        bytes.fromhex(KEY_HEX)).public_key.hex()[:8]


def test_encrypted_key_opens_only_with_its_password(isolated: Path, tmp_path: Path) -> None:
    (tmp_path / "right").write_text("correct horse\n")
    (tmp_path / "wrong").write_text("battery staple\n")
    imported = run("keys", "import", KEY_HEX, "--name", "vault", "--password-file",
                   str(tmp_path / "right"), "--json")
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["encrypted"]
    stored = (isolated / "vault.json").read_text()
    assert KEY_HEX not in stored and "aes-256-gcm" in stored
    one_line_error(run("keys", "show", "vault", "--reveal", "--password-file",
                       str(tmp_path / "wrong")), exits.USAGE, "wrong password")
    opened = run("keys", "show", "vault", "--reveal", "--password-file", str(tmp_path / "right"))
    assert opened.exit_code == 0, opened.output
    assert json.loads(opened.stdout)["private_key"] == KEY_HEX
    # A password typed on the terminal (prompted, confirmed) works the same.
    typed = run("keys", "new", "--name", "typed", "--encrypt", "--json", input="pw\npw\n")
    assert typed.exit_code == 0, typed.output
    assert json.loads(typed.stdout)["encrypted"]
    assert run("keys", "show", "typed", "--reveal", input="pw\n").exit_code == 0
    refused = run("keys", "show", "typed", "--reveal", input="nope\n")
    assert refused.exit_code == exits.USAGE  # stderr: the prompt, then one error line
    assert refused.stderr.splitlines()[-1].startswith("Error: wrong password")
    assert refused.stderr.count("Error") == 1 and "private_key" not in refused.stdout


def test_keys_shard_count_comes_from_the_testnet_folder(tmp_path: Path) -> None:
    generate(TestnetSpec(shards=3, validators=4, accounts=10), tmp_path / "net")
    address = derive_account("shardnet", 5).public_key
    found = run("keys", "--index", "5", "--testnet", str(tmp_path / "net"))
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    assert answer["num_shards"] == 3 and answer["shard"] == shard_of(address, 3)
    # No testnet known: the default testnet's 2 shards, said on stderr.
    fallback = run("keys", "--index", "5")
    assert json.loads(fallback.stdout)["num_shards"] == 2 and "--shards" in fallback.stderr
    assert json.loads(run("keys", "--index", "5", "--shards", "7").stdout)["shard"] == \
        shard_of(address, 7)
    # A URL asked for and not answering: exit 3 rather than a guessed shard.
    one_line_error(run("keys", "--index", "5", "--url", CLOSED_URL), exits.UNREACHABLE,
                   CLOSED_URL, "--shards")
    run("keys", "import", KEY_HEX, "--name", "bob")
    listed = json.loads(run("keys", "list", "--json", "--testnet", str(tmp_path / "net")).stdout)
    assert listed[0]["shard"] == shard_of(bytes.fromhex(listed[0]["address"]), 3)


# ---------------------------------------------------------------------------
# offline signing


def test_tx_raw_with_nonce_and_chain_id_signs_without_any_node(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDNET_URL", CLOSED_URL)
    attempts = no_sockets(monkeypatch)
    result = run("tx", "transfer", "--to", RECIPIENT, "--amount", "25", "--raw",
                 "--nonce", "7", "--chain-id", "shardnet-offline")
    assert result.exit_code == 0, result.output
    assert attempts == []
    tx = decode_tx(bytes.fromhex(result.stdout.strip()))
    sender = derive_account("shardnet", 0).public_key  # the default signer
    assert tx.body.sender == sender and tx.body.nonce == 7
    assert tx.body.chain_id == "shardnet-offline"
    # What the ledger checks at admission: chain, shape, shard, keys, signature.
    check_tx_stateless(tx, "shardnet-offline", shard_of(sender, 2), 2)
    assert verify_tx_signature(tx)


def test_private_key_signs_as_that_keys_address(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = no_sockets(monkeypatch)
    result = run("tx", "swap", "--private-key", "0x" + KEY_HEX, "--pool", "COIN-USD",
                 "--amount-in", "9", "--raw", "--nonce", "0", "--chain-id", "c", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    tx = decode_tx(bytes.fromhex(document["raw"]))
    owner = KeyPair(bytes.fromhex(KEY_HEX)).public_key
    assert tx.body.sender == owner and document["sender"] == owner.hex()
    assert document["hash"] == tx_hash(tx).hex() and verify_tx_signature(tx)
    assert attempts == []


def test_keystore_and_key_file_sign_as_their_key(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    run("keys", "import", KEY_HEX, "--name", "mine", "--password-file", str(tmp_path / "pw"))
    owner = KeyPair(bytes.fromhex(KEY_HEX)).public_key
    no_sockets(monkeypatch)
    by_name = run("tx", "transfer", "--key", "mine", "--password-file", str(tmp_path / "pw"),
                  "--to", RECIPIENT, "--amount", "1", "--raw", "--nonce", "3", "--chain-id", "c")
    assert by_name.exit_code == 0, by_name.output
    assert decode_tx(bytes.fromhex(by_name.stdout.strip())).body.sender == owner
    (tmp_path / "key.hex").write_text(KEY_HEX)
    by_file = run("tx", "transfer", "--key-file", str(tmp_path / "key.hex"), "--to",
                  RECIPIENT, "--amount", "1", "--raw", "--nonce", "3", "--chain-id", "c")
    assert by_file.stdout == by_name.stdout  # Ed25519 is deterministic


def test_tx_raw_reads_the_chain_id_from_the_testnet_folder_offline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = generate(TestnetSpec(shards=2, validators=4, accounts=10), tmp_path / "net")
    attempts = no_sockets(monkeypatch)
    result = run("tx", "transfer", "--to", RECIPIENT, "--amount", "2", "--raw", "--nonce",
                 "0", "--testnet", str(tmp_path / "net"))
    assert result.exit_code == 0, result.output
    assert decode_tx(bytes.fromhex(result.stdout.strip())).body.chain_id == manifest.chain_id
    assert attempts == []


# ---------------------------------------------------------------------------
# output and errors


class FakeApi:
    """Stands in for ``scripts.cli.client.call``: one shard, accepts and finalizes."""

    def __init__(self) -> None:
        self.posted: list[str] = []

    def __call__(self, method: str, url: str, body: Any = None, timeout_s: float = 0) -> Any:
        path = url.split("127.0.0.1:1", 1)[1]
        if path == "/v1/status":
            return {"shard": 0, "num_shards": 1, "chain_id": "fake-chain"}
        if path == "/v1/network":
            return {"nodes": []}
        if path.startswith("/v1/accounts/"):
            return {"address": path.rsplit("/", 1)[1], "shard": 0, "nonce": 4, "balances": {}}
        if method == "POST":
            self.posted.extend(body["txs"])
            digest = tx_hash(decode_tx(bytes.fromhex(body["txs"][0]))).hex()
            return {"results": [{"hash": digest, "accepted": True}]}
        digest = path.rsplit("/", 1)[1]
        return {"hash": digest, "status": "finalized", "shard": 0, "height": 3, "index": 0,
                "outcome": {"ok": True, "error": None, "receipts": 0}, "hops": []}


def test_tx_json_is_one_document_on_stdout_and_progress_on_stderr(
        monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    monkeypatch.setattr(client_module, "call", api)
    result = run("tx", "transfer", "--url", "http://127.0.0.1:1", "--to", RECIPIENT,
                 "--amount", "5", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # the whole stdout is one JSON document
    tx = decode_tx(bytes.fromhex(api.posted[0]))
    assert document["status"] == "finalized" and document["hash"] == tx_hash(tx).hex()
    assert tx.body.nonce == 4 and tx.body.chain_id == "fake-chain"  # asked from the node
    assert f"submitted {document['hash']}" in result.stderr
    plain = run("tx", "transfer", "--url", "http://127.0.0.1:1", "--to", RECIPIENT,
                "--amount", "5")
    assert plain.exit_code == 0 and plain.stdout.startswith("finalized ")
    assert "{" not in plain.stdout


def test_account_of_a_keystore_key_needs_no_password(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw\n")
    run("keys", "import", KEY_HEX, "--name", "vault", "--password-file", str(tmp_path / "pw"))
    monkeypatch.setattr(client_module, "call", FakeApi())
    result = run("account", "--key", "vault", "--url", "http://127.0.0.1:1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["address"] == KeyPair(
        bytes.fromhex(KEY_HEX)).public_key.hex()


@pytest.mark.parametrize("key", ["zz" * 32, "42" * 31, "42" * 33])
def test_bad_hex_private_key_is_one_usage_line(key: str) -> None:
    result = run("tx", "transfer", "--private-key", key, "--to", RECIPIENT, "--amount", "1",
                 "--raw", "--nonce", "0", "--chain-id", "c")
    one_line_error(result, exits.USAGE, "--private-key", "64 hex digits")
    assert key not in result.output  # a key is never echoed back


def test_unknown_key_name_is_one_usage_line() -> None:
    run("keys", "new", "--name", "alice")
    one_line_error(run("tx", "transfer", "--key", "bob", "--to", RECIPIENT, "--amount", "1",
                       "--raw", "--nonce", "0", "--chain-id", "c"),
                   exits.USAGE, "'bob'", "alice")
    one_line_error(run("keys", "show", "bob"), exits.USAGE, "'bob'")


def test_missing_keystore_is_one_usage_line(isolated: Path) -> None:
    one_line_error(run("keys", "list"), exits.USAGE, str(isolated), "keys new")
    one_line_error(run("tx", "transfer", "--key", "alice", "--to", RECIPIENT, "--amount", "1",
                       "--raw", "--nonce", "0", "--chain-id", "c"), exits.USAGE, "no keystore")


def test_two_signers_and_unreachable_node_have_their_codes() -> None:
    one_line_error(run("tx", "transfer", "--private-key", KEY_HEX, "--index", "2", "--to",
                       RECIPIENT, "--amount", "1"), exits.USAGE, "one signer")
    # Submitting needs a node: none answers at the URL.
    one_line_error(run("tx", "transfer", "--to", RECIPIENT, "--amount", "1", "--url",
                       CLOSED_URL), exits.UNREACHABLE, CLOSED_URL)
    # No testnet folder and no URL: say what to give.
    one_line_error(run("tx", "transfer", "--to", RECIPIENT, "--amount", "1"), exits.USAGE,
                   "--testnet", "--url")


def test_key_name_with_a_path_is_refused(isolated: Path, tmp_path: Path) -> None:
    one_line_error(run("keys", "new", "--name", "../outside"), exits.USAGE, "key name")
    one_line_error(run("tx", "transfer", "--key", "../outside", "--to", RECIPIENT,
                       "--amount", "1", "--raw", "--nonce", "0", "--chain-id", "c"),
                   exits.USAGE, "key name")
    assert not (tmp_path / "outside.json").exists()


def test_edited_or_costly_key_file_is_refused(isolated: Path, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pw\n")
    run("keys", "import", KEY_HEX, "--name", "vault", "--password-file", str(tmp_path / "pw"))
    path = isolated / "vault.json"
    original = json.loads(path.read_text())
    # Another address on the same sealed key: the tag binds the address, so it fails.
    path.write_text(json.dumps({**original, "address": derive_account("x", 0).public_key.hex()}))
    one_line_error(run("keys", "show", "vault", "--reveal", "--password-file",
                       str(tmp_path / "pw")), exits.USAGE, "wrong password")
    # A scrypt cost that would take a terabyte is refused before scrypt runs.
    path.write_text(json.dumps({**original, "crypto": {**original["crypto"], "n": 2**40}}))
    one_line_error(run("keys", "show", "vault", "--reveal", "--password-file",
                       str(tmp_path / "pw")), exits.USAGE, "above the bounds")
