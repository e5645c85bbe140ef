"""Examples drawn up front from a Hypothesis strategy, for fuzz tests that land or build them in batches."""
from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed


def generate(strategy, count: int, seed: int) -> list:
    """``count`` examples of ``strategy``, reproducible from ``seed`` (Hypothesis does the generating)."""
    examples: list = []

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example):
        examples.append(example)

    collect()
    return examples[:count]
