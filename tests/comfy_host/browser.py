"""A headless Chromium driven over the DevTools protocol (websocket-client), for running the
pack inside the real ComfyUI web app. Test helper; not part of the pack.

    browser = Browser(port)          # one Chromium
    tab = browser.tab()              # a page (call again for a second tab)
    tab.navigate(url); tab.eval("1 + 1"); tab.screenshot(path); tab.errors
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1600,1000", "--hide-scrollbars", "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    # keep timers and frames running in a tab that is not in front (two-tab tests)
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]  # fmt: skip


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Tab:
    """One page: evaluate JavaScript, take screenshots, collect errors."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.n = 0
        self.errors: list[dict] = []  # exceptions, console errors, failed loads
        self.console: list[str] = []
        for method in ("Runtime.enable", "Page.enable", "Log.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(msg)
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") == "error":
                self.errors.append(msg)
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(msg)

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg
            self._event(msg)

    def pump(self, seconds: float) -> None:
        """Let the page run for a while, collecting its events."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            self.eval("1")
            time.sleep(0.2)

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)  # fmt: skip
        result = r.get("result", {})
        if "exceptionDetails" in result:
            raise RuntimeError(json.dumps(result["exceptionDetails"])[:3000])
        if "error" in r:
            raise RuntimeError(json.dumps(r["error"])[:3000])
        return result.get("result", {}).get("value")

    def call_function(self, source: str, *args):
        """Evaluate `(source)(...args)` with JSON arguments; -> its (awaited) value."""
        return self.eval(f"({source})(...{json.dumps(list(args))})")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(expression)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self, path: str | Path) -> Path:
        self.call("Page.bringToFront")  # a background tab renders no frame to capture
        self.pump(0.5)
        data = self.call("Page.captureScreenshot", format="png")["result"]["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def error_texts(self) -> list[str]:
        out = []
        for msg in self.errors:
            p = msg.get("params", {})
            if msg["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(d.get("exception", {}).get("description") or d.get("text", ""))
            elif msg["method"] == "Log.entryAdded":
                e = p.get("entry", {})
                out.append(f"{e.get('text')} ({e.get('url', '')})")
            else:
                out.append(
                    " ".join(
                        str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
                    )
                )
        return out

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


class Browser:
    def __init__(self, port: int = 9333):
        self.port = port
        self.profile = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.tabs: list[Tab] = []
        self._first: str | None = None
        for _ in range(150):
            try:
                pages = self._json("/json")
                self._first = next(t["webSocketDebuggerUrl"] for t in pages if t["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.2)
        if self._first is None:
            self.close()
            raise RuntimeError("chromium did not start")

    def _json(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def tab(self) -> Tab:
        """The first page the first time, a new page after that."""
        if self._first is not None:
            url, self._first = self._first, None
        else:
            url = self._json("/json/new?about:blank", method="PUT")["webSocketDebuggerUrl"]
        tab = Tab(url)
        self.tabs.append(tab)
        return tab

    def close(self) -> None:
        for tab in self.tabs:
            tab.close()
        self.proc.kill()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.profile, ignore_errors=True)
