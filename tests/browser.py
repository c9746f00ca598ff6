"""Headless Chromium for the HTML page's tests (Debian's package, ``make browser``)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed")


def _args(profile: Path) -> list[str]:
    return [chromium() or "", "--headless", "--no-sandbox", "--disable-gpu",
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}",
            # Any host name resolves to nothing: a page that needs the network fails.
            "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip


def page_state(url: str, profile: Path) -> tuple[dict[str, Any], str]:
    """Open ``url``, let its scripts run, and return the ``data-*`` attributes its script
    left on ``<body>`` (JSON values decoded) and Chromium's log."""
    out = subprocess.run([*_args(profile), "--dump-dom", url], capture_output=True, text=True,
                         timeout=180, check=True)  # fmt: skip
    body = re.search(r"<body([^>]*)>", out.stdout)
    assert body, out.stdout[:2000]
    state: dict[str, Any] = {}
    for key, value in re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)):
        text = html.unescape(value)
        try:
            state[key] = json.loads(text)
        except json.JSONDecodeError:
            state[key] = text
    return state, out.stderr


def screenshot(url: str, profile: Path, shot: Path, size: str = "1200,1600") -> None:
    subprocess.run([*_args(profile), f"--screenshot={shot}", f"--window-size={size}", url],
                   capture_output=True, text=True, timeout=180, check=True)  # fmt: skip
