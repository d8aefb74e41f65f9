"""A mypy plugin that changes nothing in type checking: it only gives `chatapp.settings` the development
environment before django-stubs imports it (DEBUG is off by default, and with DEBUG off the settings
refuse to load without SECRET_KEY). Listed before mypy_django_plugin in pyproject.toml."""

from __future__ import annotations

import os

from mypy.plugin import Plugin

os.environ.setdefault("DEBUG", "true")


def plugin(version: str) -> type[Plugin]:
    return Plugin
