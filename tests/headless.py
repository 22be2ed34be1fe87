"""Render a local HTML file in headless Chromium (Debian's ``chromium``) over the DevTools
protocol: console errors, uncaught exceptions and failed loads, every ``<img>``'s decoded size,
and a full-page PNG screenshot.

Why the DevTools protocol and not ``--dump-dom`` / ``--screenshot``: the command-line modes
cannot report console errors or whether an image decoded without the page itself recording them,
and the report carries no script. ``websockets`` (its synchronous client) speaks the protocol;
the rest is four commands. Chromium runs with a fresh profile and every background service off
(the machine's network refuses other connections): it starts in about a second.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["chromium_path", "render_page"]

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1200,900")
IMAGES_JS = "JSON.stringify(Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]))"


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """``sig`` to the process group ``process`` leads (it was started with ``start_new_session``)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # the whole group has exited already
        pass


def chromium_path() -> str | None:
    return shutil.which("chromium")


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with code {process.returncode}")
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


class _Session:
    def __init__(self, ws) -> None:  # noqa: ANN001 - a websockets.sync.client.ClientConnection
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 30.0, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == event:
                return
        raise TimeoutError(f"no {event} within {timeout} s")


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


def render_page(html_path: Path, screenshot: Path, timeout: float = 60.0) -> dict:
    """Load ``html_path`` and return ``{"errors": [str], "images": [(alt, complete, naturalWidth,
    naturalHeight)], "requests": [url], "seconds": {"start", "load"}}``; writes a full-page PNG to
    ``screenshot``. ``requests``: every URL the page asked for (data: URIs excluded)."""
    from websockets.sync.client import connect

    # Chromium's helper processes may still write to the profile for a moment after it exits
    with tempfile.TemporaryDirectory(prefix="ecs-chromium-", ignore_cleanup_errors=True) as profile:
        t0 = time.perf_counter()
        process = subprocess.Popen([chromium_path() or "chromium", *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = _devtools_port(Path(profile), process, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
                target = next(t for t in json.load(reply) if t.get("type") == "page")
            started = time.perf_counter() - t0
            with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
                session = _Session(ws)
                for domain in ("Page", "Runtime", "Log", "Network"):
                    session.call(f"{domain}.enable")
                session.call("Page.navigate", url=Path(html_path).resolve().as_uri())
                session.wait_for("Page.loadEventFired", timeout)
                images = json.loads(session.call("Runtime.evaluate", expression=IMAGES_JS, returnByValue=True)["result"]["value"])
                shot = session.call("Page.captureScreenshot", timeout=timeout, format="png", captureBeyondViewport=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            requests = [e["params"]["request"]["url"] for e in session.events if e.get("method") == "Network.requestWillBeSent"]
            return {"errors": _errors(session.events), "images": images,
                    "requests": [u for u in requests if not u.startswith("data:")],
                    "seconds": {"start": started, "load": time.perf_counter() - t0 - started}}
        finally:  # the browser and its helpers: its own process group, started above
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
