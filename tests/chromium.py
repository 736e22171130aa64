"""Look at a page the way a person does: headless Chromium (Debian's ``chromium``) loads it,
driven over the DevTools protocol so that it can carry a cookie (the Ray dashboard's token)
and wait until the page shows what it should, then saves a screenshot."""
from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import subprocess
import tempfile
import time

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--window-size=1400,900", "--remote-debugging-port=0"]


async def _look(ws_url: str, url: str, png: str, expect: list[str], cookie: dict | None, timeout: float) -> str:
    import aiohttp

    ids = itertools.count(1)
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:

        async def call(method: str, **params):
            i = next(ids)
            await ws.send_json({"id": i, "method": method, "params": params})
            while True:
                msg = await ws.receive_json()
                if msg.get("id") == i:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]

        if cookie:
            await call("Network.setCookie", url=url, **cookie)
        await call("Page.navigate", url=url)
        deadline, text = time.time() + timeout, ""
        while time.time() < deadline:
            await asyncio.sleep(1)
            res = await call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True)
            text = res["result"].get("value", "")
            if all(e in text for e in expect):
                await asyncio.sleep(1)  # let charts finish drawing
                break
        shot = await call("Page.captureScreenshot", format="png")
        with open(png, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        return text


def look(url: str, png: str, *, expect: list[str], cookie: dict | None = None, timeout: float = 60.0) -> str:
    """Load ``url``, wait up to ``timeout`` s until its text contains every string in ``expect``,
    screenshot it to ``png`` and return the page's text (whatever it shows by then)."""
    import json
    import urllib.request

    profile = tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        port = open(port_file).read().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        return asyncio.run(_look(page["webSocketDebuggerUrl"], url, png, expect, cookie, timeout))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
