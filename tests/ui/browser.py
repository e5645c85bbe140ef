"""Headless Chromium (the Debian ``chromium`` package) and a real ``airflow api-server`` for the UI tests."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from devstack.airflow import VENV_BIN


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    binary = chromium()
    assert binary, "chromium is not installed (apt-get install chromium; .ci/run installs it)"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, url],
            capture_output=True, text=True, timeout=timeout)


def dump_dom(url: str) -> str:
    """The DOM after the page loaded (and followed its redirects), as HTML."""
    result = _chromium(url, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path: Path, width: int = 1400, height: int = 3200) -> Path:
    result = _chromium(url, f"--screenshot={path}", f"--window-size={width},{height}")
    assert result.returncode == 0 and path.is_file(), result.stderr[-2000:]
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """``airflow api-server`` on a free loopback port, with the environment of ``devstack.airflow``."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow api-server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise RuntimeError(f"airflow api-server not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class Node:
    """An element of a parsed page: ``tag``, ``attrs``, ``children``; ``text()`` is all its text."""

    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs, self.children = tag, attrs, []  # children: Node or str

    def text(self) -> str:
        return " ".join(" ".join(c.text() if isinstance(c, Node) else c for c in self.children).split())

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(
                        child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                    found.append(child)
                found += child.find_all(tag, **attrs)
        return found

    def by_class(self, name: str) -> list[Node]:
        return [n for n in self.find_all() if name in n.attrs.get("class", "").split()]


def parse_html(text: str) -> Node:
    from html.parser import HTMLParser

    void = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    root = Node("#document", {})
    stack = [root]

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            node = Node(tag, {k: v or "" for k, v in attrs})
            stack[-1].children.append(node)
            if tag not in void:
                stack.append(node)

        def handle_startendtag(self, tag, attrs):
            stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

        def handle_endtag(self, tag):
            for depth in range(len(stack) - 1, 0, -1):
                if stack[depth].tag == tag:
                    del stack[depth:]
                    break

        def handle_data(self, data):
            stack[-1].children.append(data)

    Parser(convert_charrefs=True).feed(text)
    return root
