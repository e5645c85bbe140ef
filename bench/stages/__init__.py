"""The measured stages, in the order they run (end_to_end changes the source data, so it is last)."""
from __future__ import annotations

from collections.abc import Callable

from bench.context import BenchContext, StageResult
from bench.stages import crm, dbt, end_to_end, extraction, landing, memory

STAGES: dict[str, Callable[[BenchContext, StageResult], None]] = {
    "extraction": extraction.run,
    "landing": landing.run,
    "dbt": dbt.run,
    "crm": crm.run,
    "memory": memory.run,
    "end_to_end": end_to_end.run,
}
