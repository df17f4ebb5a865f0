from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.support.docker import start_background_build, stop_background_build

# Shared, noisy 2-core machines: no per-example deadline, fixed example budgets.
settings.register_profile(
    "shardnet",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("shardnet")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Docker tests run last, and when any is selected the image (re)build starts now
    in the background (tests/support/docker.py): it overlaps the other tests instead of
    stopping the first Docker test for minutes. Within each group the order is kept."""
    docker_items = [item for item in items if item.get_closest_marker("docker") is not None]
    if not docker_items:
        return
    items[:] = [item for item in items if item.get_closest_marker("docker") is None
                ] + docker_items
    if not config.option.collectonly:
        start_background_build()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_background_build()
