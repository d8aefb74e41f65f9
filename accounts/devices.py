"""A session's device in words ("Firefox on Android") from its User-Agent header, for the sessions list."""

from __future__ import annotations

import re

# First match wins: Edge and Opera also say "Chrome", Chrome also says "Safari".
_BROWSERS = [
    ("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/")),
    ("Opera", re.compile(r"\bOPR/")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS|Chromium)/")),
    ("Safari", re.compile(r"\bSafari/")),
]
_SYSTEMS = [
    ("Android", re.compile(r"Android")),
    ("iPhone", re.compile(r"iPhone")),
    ("iPad", re.compile(r"iPad")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Linux", re.compile(r"Linux")),
]


def device_label(user_agent: str) -> str:
    """'<browser> on <system>', either part 'Unknown …' when not recognised; an empty header: 'Unknown device'."""
    if not user_agent.strip():
        return "Unknown device"
    browser = next((name for name, pattern in _BROWSERS if pattern.search(user_agent)), "")
    system = next((name for name, pattern in _SYSTEMS if pattern.search(user_agent)), "")
    if not browser and not system:
        return user_agent[:60]  # an API client or script: its own name says most
    return f"{browser or 'Unknown browser'} on {system or 'unknown system'}"
