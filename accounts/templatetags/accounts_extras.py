from __future__ import annotations

from django import template

from accounts.devices import device_label

register = template.Library()


@register.filter
def device(user_agent: str) -> str:
    return device_label(user_agent or "")
