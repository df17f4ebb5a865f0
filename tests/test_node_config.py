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
