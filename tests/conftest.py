from __future__ import annotations

from hypothesis import HealthCheck, settings

# Shared, noisy 2-core machines: no per-example deadline, fixed example budgets.
settings.register_profile(
    "shardnet",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("shardnet")
