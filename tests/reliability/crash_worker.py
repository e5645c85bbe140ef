"""Runs one pipeline stage in its own process, so a test can kill -9 it part-way.

    python crash_worker.py '{"stage": "extract"|"load", "urls": {...}, "wh_url": "...", "folder": "...", "run_id": "..."}'
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline_harness import extract_all, settings_for

from ecomsync.tasks import load_crm


def main(arguments: dict) -> None:
    settings = settings_for(arguments["urls"], Path(arguments["folder"]))
    if arguments["stage"] == "extract":
        extract_all(settings, arguments["wh_url"], arguments["run_id"])
    else:
        load_crm(settings.config, settings.crm, arguments["wh_url"], run_id=arguments["run_id"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
