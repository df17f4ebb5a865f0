"""The wallet commands run offline in a test: a keystore and a working folder of the
test's own, no ``SHARDNET_URL`` from the environment; ``run`` invokes ``shardnet``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from scripts.cli.main import main


@pytest.fixture
def offline_wallet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDNET_KEYSTORE", str(tmp_path / "keystore"))
    monkeypatch.delenv("SHARDNET_URL", raising=False)
    monkeypatch.chdir(tmp_path)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))
