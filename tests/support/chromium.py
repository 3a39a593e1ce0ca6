"""Headless Chromium (Debian's `chromium` package) for the report page tests.

    from support.chromium import require_chromium, open_page, screenshot

- `open_page(url)` loads a page in a headless Chromium driven over the DevTools protocol and
  returns what the console said (errors of scripts, of the console API, and of the browser's own
  log: a blocked or failed load, a Content-Security-Policy violation) and the box of every element
  that a CSS selector picks.
- `screenshot(url, path)` is `chromium --headless --screenshot`, at the same window size.

`require_chromium` skips the test with the reason when /usr/bin/chromium is missing, except under
CI=true, where CI installs it (tasks.py) and a missing one is a broken build.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1400, 1000)
_LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")
# Running as root (containers, CI) needs --no-sandbox; the page is our own, loaded from loopback.
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
]


def require_chromium() -> None:
    """Skip (or, under CI=true, fail) when headless Chromium is not installed."""
    if CHROMIUM.exists():
        return
    reason = (
        f"{CHROMIUM} not found: install Debian's chromium package "
        "(apt-get install -y chromium) to open the report page in a browser"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: tasks.py installs it)")
    pytest.skip(reason)


@dataclass
class LoadedPage:
    """What a page load left: console errors and element boxes (CSS pixels)."""

    errors: list[str] = field(default_factory=list)
    boxes: list[dict[str, float]] = field(default_factory=list)


class _DevTools:
    """A minimal DevTools protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(url, max_size=None, open_timeout=20).__enter__()
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self.socket.recv(timeout=remaining)))

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.socket.recv(timeout=remaining)))
            except TimeoutError:
                return

    def close(self) -> None:
        self.socket.__exit__(None, None, None)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(f"log: {params['entry'].get('text')}")
    return found


def open_page(url: str, selector: str) -> LoadedPage:
    """Load `url` in headless Chromium; its console errors and the boxes `selector` picks."""
    # Chromium's helper processes may still write to the profile for a moment after the browser
    # exits; a leftover file must not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [
                str(CHROMIUM),
                *_FLAGS,
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            port = _devtools_port(browser)
            targets = json.loads(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read()
            )
            page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            tools = _DevTools(page_ws)
            try:
                for domain in ("Runtime", "Log", "Page"):
                    tools.call(f"{domain}.enable")
                tools.events.clear()
                tools.call("Page.navigate", url=url)
                tools.wait_for("Page.loadEventFired")
                tools.drain(0.5)
                script = (
                    "JSON.stringify([...document.querySelectorAll(" + json.dumps(selector) + ")]"
                    ".map(e => { const r = e.getBoundingClientRect(); return {left: r.left, "
                    "top: r.top, width: r.width, height: r.height, "
                    "complete: e.complete === undefined ? true : e.complete, "
                    "natural: e.naturalWidth || 0}; }))"
                )
                value = tools.call("Runtime.evaluate", expression=script, returnByValue=True)
                boxes = json.loads(value["result"]["value"])
                return LoadedPage(_errors(tools.events), boxes)
            finally:
                tools.close()
        finally:
            browser.terminate()
            try:
                browser.wait(timeout=20)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()


def _devtools_port(browser: subprocess.Popen[str]) -> int:
    assert browser.stderr is not None
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = browser.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            return int(match.group(2))
    raise RuntimeError("Chromium did not open its DevTools port:\n" + "".join(seen[-20:]))


def screenshot(url: str, path: Path) -> None:
    """`chromium --headless --screenshot=path url` at the window size of `open_page`."""
    # Chromium's helper processes may still write to the profile for a moment after the browser
    # exits; a leftover file must not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        subprocess.run(
            [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url],
            capture_output=True,
            check=True,
            timeout=120,
        )
    if not path.exists():
        raise RuntimeError(f"Chromium wrote no screenshot to {path}")
