"""Serve sandbox APIs for the benchmark: ``python -m bench.serve '<json spec>'``.

The spec maps an API name (``bigcommerce``, ``square``, ``activecampaign``) to the keyword
arguments of its ``create_app``; APIs left out are not served. The first stdout line is
``{"<api>": "http://127.0.0.1:<port>", …}``; the process serves until its stdin closes.
"""
from __future__ import annotations

import json
import sys

from sandbox import activecampaign, bigcommerce, square
from sandbox.core import serve

FACTORIES = {"bigcommerce": bigcommerce.create_app, "square": square.create_app,
             "activecampaign": activecampaign.create_app}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    unknown = set(spec) - set(FACTORIES)
    if unknown:
        raise SystemExit(f"unknown sandbox APIs {sorted(unknown)}; known: {sorted(FACTORIES)}")
    servers, urls = [], {}
    for api, options in spec.items():
        server, _ = serve(FACTORIES[api](**options))
        servers.append(server)
        urls[api] = f"http://127.0.0.1:{server.server_port}"
    print(json.dumps(urls), flush=True)
    sys.stdin.read()  # until the harness closes our stdin (or exits)
    for server in servers:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
