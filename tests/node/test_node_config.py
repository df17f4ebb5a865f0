from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ConfigError, load_config, parse_config, render_config


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = parse_config("[node]\nshard = 1\nindex = 2\n", tmp_path)
    assert (config.node.shard, config.node.index) == (1, 2)
    assert config.consensus.block_txs_max > 0
    assert config.path("data") == tmp_path / "data"


def test_rendered_config_round_trips(tmp_path: Path) -> None:
    config = parse_config("[node]\nshard = 0\nindex = 3\n[api]\nport = 8123\n", tmp_path)
    again = parse_config(render_config(config), tmp_path)
    assert again == config


def test_config_rejects_wrong_type_and_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\.api\.port"):
        parse_config('[node]\nshard = 0\nindex = 0\n[api]\nport = "x"\n', tmp_path)


def test_config_rejects_out_of_range_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\.p2p\.listen_port"):
        parse_config("[node]\nshard = 0\nindex = 0\n[p2p]\nlisten_port = 70000\n", tmp_path)


def test_config_rejects_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="blocks_per_second"):
        parse_config("[node]\nshard = 0\nindex = 0\nblocks_per_second = 3\n", tmp_path)


def test_config_rejects_missing_identity(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="index"):
        parse_config("[node]\nshard = 0\n", tmp_path)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[node\n", tmp_path)


NODE = "[node]\nshard = 0\nindex = 0\n"


@pytest.mark.parametrize(("extra", "key"), [
    ('[p2p]\nlisten_host = "localhost"\n', r"\$\.p2p\.listen_host"),
    ("[p2p]\ndial_backoff_min_ms = 500\ndial_backoff_max_ms = 100\n",
     r"\$\.p2p\.dial_backoff_max_ms"),
    ("[p2p]\nframe_bytes_max = 100\n", r"\$\.p2p\.frame_bytes_max"),
    ("[consensus]\nblock_bytes_max = 8388608\n", r"\$\.consensus\.block_bytes_max"),
    ("[p2p]\nframe_bytes_max = 1048576\n", r"\$\.consensus\.block_bytes_max"),
])
def test_config_rejects_what_the_p2p_layer_would_refuse_and_names_the_key(
        tmp_path: Path, extra: str, key: str) -> None:
    """Checked when the file is read, not when the node is half started: a block must
    fit a p2p frame, the p2p host listens on an IPv4 address, backoff bounds are ordered."""
    with pytest.raises(ConfigError, match=key):
        parse_config(NODE + extra, tmp_path)


def test_default_block_fits_the_default_frame(tmp_path: Path) -> None:
    config = parse_config(NODE, tmp_path)
    assert config.consensus.block_bytes_max + 64 * 1024 <= config.p2p.frame_bytes_max


def test_config_rejects_a_home_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\.home"):
        parse_config('home = "/elsewhere"\n' + NODE, tmp_path)


def test_a_node_with_a_bad_genesis_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    """Start-up failures are a clean error (reason and field), not a traceback."""
    import json
    import subprocess
    import sys

    from scripts.cli.testnet.generate import TestnetSpec, generate

    manifest = generate(TestnetSpec(shards=1, validators=4, accounts=10), tmp_path / "net")
    home = tmp_path / "net" / "nodes" / manifest.nodes[0].name
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["validators"][0][1]["p2p_address"] = "/ip4/127.0.0.1/tcp/9000"
    (home / "genesis.json").write_text(json.dumps(genesis))
    done = subprocess.run([sys.executable, "-m", "scripts.cli", "node", "--home", str(home)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot start the node: bad_genesis" in done.stderr
    assert "validators[0][1].p2p_address" in done.stderr
