"""Settings for the whole suite.

Hypothesis' per-example deadline is a wall-clock limit: on a loaded 2-core CI machine a
correct property test can exceed it and fail. Speed is measured in benchmarks, never
asserted by tests, so every property test runs without a deadline.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("migweaver", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("migweaver")
