"""A key of one's own against a real 1 x 4 testnet (issue 17, deliverable 5): import a
key into a keystore, fund its address from a seed account, then a transfer signed with
the imported (encrypted) key is accepted and finalized, and the JSON outcome is the
whole of stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from consensus.kernel.crypto import KeyPair
from scripts.cli.main import main
from sharding.accounts import derive_account
from tests.support.node import local_testnet

KEY_HEX = "5e" * 32


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.mark.integration
def test_transfer_signed_with_an_imported_key_is_finalized(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDNET_URL", raising=False)
    keystore = tmp_path / "keystore"
    (tmp_path / "pw").write_text("testnet only\n")
    imported = run("keys", "import", KEY_HEX, "--name", "mine", "--keystore", str(keystore),
                   "--password-file", str(tmp_path / "pw"), "--json")
    assert imported.exit_code == 0, imported.output
    mine = KeyPair(bytes.fromhex(KEY_HEX)).public_key.hex()
    assert json.loads(imported.stdout)["address"] == mine
    recipient = derive_account("shardnet", 1).public_key.hex()
    with local_testnet(tmp_path, shards=1) as net:
        folder = str(net.root)
        # Never funded: the node refuses it (exit 1, one line with the reason).
        unfunded = run("tx", "transfer", "--key", "mine", "--keystore", str(keystore),
                       "--password-file", str(tmp_path / "pw"), "--to", recipient,
                       "--amount", "10", "--testnet", folder, "--json")
        assert unfunded.exit_code == 1, (unfunded.stdout, unfunded.stderr)
        assert json.loads(unfunded.stdout)["status"] == "rejected"
        assert "unfunded_sender" in unfunded.stderr
        funded = run("tx", "transfer", "--index", "0", "--to", mine, "--amount", "1000",
                     "--testnet", folder, "--json")
        assert funded.exit_code == 0, funded.output
        assert json.loads(funded.stdout)["status"] == "finalized"
        sent = run("tx", "transfer", "--key", "mine", "--keystore", str(keystore),
                   "--password-file", str(tmp_path / "pw"), "--to", recipient,
                   "--amount", "10", "--testnet", folder, "--json")
        assert sent.exit_code == 0, sent.output
        outcome = json.loads(sent.stdout)  # one JSON document; progress went to stderr
        assert outcome["status"] == "finalized" and outcome["sender"] == mine
        assert outcome["outcome"]["ok"] and "submitted" in sent.stderr
        account = run("account", "--key", "mine", "--keystore", str(keystore),
                      "--testnet", folder)
        assert account.exit_code == 0, account.output
        state = json.loads(account.stdout)
        assert state["nonce"] == 1 and state["balances"]["COIN"] == 990
