"""Start the three sandbox APIs: ``python -m sandbox serve``.

Options: ``--seed``, the three ports, ``--fixtures DIR`` (a directory with
``bigcommerce/`` and ``square/`` sub-folders in the APIs' native shapes), and
``--rate-limits off`` for fast local loops. Stops on SIGTERM / Ctrl-C.

``python -m sandbox crm-dump --url http://127.0.0.1:8103 [--duplicates] [--writes] [--automations]``
prints what a running ActiveCampaign sandbox holds, as JSON.
"""
from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from urllib.request import urlopen

from sandbox.core import serve

DEFAULT_PORTS = {"bigcommerce": 8101, "square": 8102, "activecampaign": 8103}


def build_apps(seed: int, fixtures: Path | None, rate_limits: bool) -> dict:
    from sandbox import activecampaign, bigcommerce, square  # here, so that crm-dump needs none of them

    return {
        "bigcommerce": bigcommerce.create_app(seed=seed, fixtures_dir=fixtures / "bigcommerce" if fixtures else None,
                                              enforce_rate_limit=rate_limits),
        "square": square.create_app(seed=seed, fixtures_dir=fixtures / "square" if fixtures else None),
        "activecampaign": activecampaign.create_app(enforce_rate_limit=rate_limits),
    }


def crm_dump(url: str, duplicates: bool, writes: bool, automations: bool = False) -> dict:
    """The CRM sandbox's stored objects, plus its duplicate counts, write log and automation log when asked."""
    admin = f"{url.rstrip('/')}/__admin/activecampaign"
    dump = {"state": _get_json(f"{admin}/state")}
    if duplicates:
        dump["duplicates"] = _get_json(f"{admin}/duplicates")
    if writes:
        dump["writes"] = _get_json(f"{admin}/writes")["writes"]
    if automations:
        dump["automations"] = _get_json(f"{admin}/automations")
    return dump


def _get_json(url: str) -> dict:
    with urlopen(url, timeout=30) as response:  # raises HTTPError on a non-2xx answer
        return json.load(response)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="serve all three APIs until stopped")
    serve_cmd.add_argument("--seed", type=int, default=42)
    serve_cmd.add_argument("--host", default="127.0.0.1")
    for api, port in DEFAULT_PORTS.items():
        serve_cmd.add_argument(f"--{api}-port", type=int, default=port)
    serve_cmd.add_argument("--fixtures", type=Path, default=None)
    serve_cmd.add_argument("--rate-limits", choices=["on", "off"], default="on")
    dump_cmd = sub.add_parser("crm-dump", help="print the state of a running ActiveCampaign sandbox as JSON")
    dump_cmd.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORTS['activecampaign']}")
    dump_cmd.add_argument("--duplicates", action="store_true", help="add the duplicate counts")
    dump_cmd.add_argument("--writes", action="store_true", help="add the write log")
    dump_cmd.add_argument("--automations", action="store_true",
                          help="add the automation log (every automation a write started) and counts per trigger")
    args = parser.parse_args(argv)
    if args.command == "crm-dump":
        print(json.dumps(crm_dump(args.url, args.duplicates, args.writes, args.automations), indent=2, ensure_ascii=False))
        return

    apps = build_apps(args.seed, args.fixtures, args.rate_limits == "on")
    servers = []
    for api, app in apps.items():
        server, _ = serve(app, args.host, getattr(args, f"{api}_port"))
        servers.append(server)
        print(f"{api}: http://{args.host}:{server.server_port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    for server in servers:
        server.shutdown()


if __name__ == "__main__":
    main()
