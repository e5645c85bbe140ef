"""Security properties that need no sandbox (issue 9, item 5): parameterised SQL, TLS verification,
tokens hidden from reprs and exception messages."""
from __future__ import annotations

import ast
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from ecomsync.crm.activecampaign import ActiveCampaignClient
from ecomsync.http import ApiError, ApiSession
from ecomsync.sources import bigcommerce, square
from ecomsync.tasks import Credentials

ROOT = Path(__file__).resolve().parents[2]
SQL_CALLS = {"execute", "executemany", "copy_expert", "mogrify"}
TOKEN = "tok-SECRET-4f1c9e"


def unsafe_sql(source: str) -> list[str]:
    """Statements handed to a cursor that were built by string formatting rather than parameters.

    Allowed: string literals, and psycopg2.sql compositions (``sql.SQL(...).format(sql.Identifier(...))``).
    A name passed as the statement is judged by every value assigned to it in the module.
    """
    tree = ast.parse(source)
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)

    def constant(expr: ast.expr) -> bool:
        if isinstance(expr, ast.Constant):
            return True
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return constant(expr.left) and constant(expr.right)
        return isinstance(expr, ast.Name) and bool(assigned.get(expr.id)) and all(
            isinstance(value, ast.Constant) for value in assigned[expr.id])

    def formatted(expr: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        if isinstance(expr, ast.JoinedStr):
            return any(isinstance(part, ast.FormattedValue) for part in expr.values)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mod, ast.Add)):
            return not constant(expr)  # literal + literal is still a literal
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "format":
            return not _is_sql_composition(expr.func.value)
        if isinstance(expr, ast.Name) and expr.id not in seen:
            return any(formatted(value, seen | {expr.id}) for value in assigned.get(expr.id, []))
        return False

    problems = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS
                and node.args and formatted(node.args[0])):
            problems.append(f"line {node.lineno}: {ast.unparse(node.args[0])[:80]}")
    return problems


def _is_sql_composition(expr: ast.expr) -> bool:
    # sql.SQL("…") / SQL("…") — psycopg2 quotes what .format() inserts
    return (isinstance(expr, ast.Call)
            and ((isinstance(expr.func, ast.Attribute) and expr.func.attr == "SQL")
                 or (isinstance(expr.func, ast.Name) and expr.func.id == "SQL")))


def test_the_checker_catches_formatted_sql():  # the scan below can fail
    bad = '''
def f(cur, table, email):
    cur.execute(f"select * from {table} where email = '{email}'")
    cur.execute("delete from t where id = %s" % email)
    cur.execute("select " + email)
    statement = "select * from {}".format(table)
    cur.execute(statement)
'''
    good = '''
from psycopg2 import sql
QUERY = "select 1 where a = %s"
DDL = "create table t (a int);"
def f(cur, table, email):
    cur.execute("select * from t where email = %s", (email,))
    cur.execute(QUERY, (email,))
    cur.execute(sql.SQL("select * from {}").format(sql.Identifier(table)))
    cur.execute(f"select 1")
    cur.execute("begin;" + DDL)
'''
    assert len(unsafe_sql(bad)) == 4
    assert unsafe_sql(good) == []


def test_every_sql_statement_in_the_pipeline_is_parameterised():  # issue 9: security
    files = sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "dags").rglob("*.py"))
    assert len(files) > 10
    problems = {str(path.relative_to(ROOT)): found for path in files if (found := unsafe_sql(path.read_text()))}
    assert problems == {}


def test_tls_verification_is_never_switched_off():  # issue 9: security
    sessions = [bigcommerce.session_for("https://api.bigcommerce.com", "k3x9q2m7a1", TOKEN),
                square.session_for("https://connect.squareup.com", TOKEN),
                ActiveCampaignClient("https://acct.api-us1.com", TOKEN, requests_per_second=5).session]
    assert all(session.session.verify is True for session in sessions)
    switched_off = [f"{path.relative_to(ROOT)}:{number}"
                    for path in sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "dags").rglob("*.py"))
                    for number, line in enumerate(path.read_text().splitlines(), 1)
                    if "verify=False" in line.replace(" ", "") or "CERT_NONE" in line]
    assert switched_off == []


@pytest.fixture(scope="module")
def untrusted_https_server(tmp_path_factory):
    """A loopback HTTPS server with a self-signed certificate: what a man in the middle would present."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_an_untrusted_certificate_is_refused_before_the_token_is_sent(untrusted_https_server):  # issue 9: security
    url, seen = untrusted_https_server
    session = square.session_for(url, TOKEN)
    session.max_attempts, session.sleep = 2, lambda seconds: None
    with pytest.raises(ApiError) as refused:
        session.request_json("GET", "/v2/locations")
    assert "SSLError" in str(refused.value)
    assert seen == []  # no request (and so no Authorization header) ever reached the server
    assert TOKEN not in str(refused.value) and TOKEN not in repr(refused.value)


def test_tokens_are_hidden_from_reprs():  # issue 9: security
    credentials = Credentials("https://api.bigcommerce.com", TOKEN)
    client = ActiveCampaignClient("https://acct.api-us1.com", TOKEN, requests_per_second=5)
    session = ApiSession("https://api.example.com", {"X-Auth-Token": TOKEN})
    for thing in (credentials, client, session, client.session):
        assert TOKEN not in repr(thing) and TOKEN not in str(thing)
