"""A bar chart of cost (or tokens) by day, laid out on the server for an inline SVG: no chart library,
no script, no style attribute (the Content-Security-Policy allows none inline)."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

WIDTH, HEIGHT, PAD_TOP, PAD_BOTTOM = 600, 160, 10, 20


def day_bars(
    by_day: list[dict[str, Any]], start: datetime.date, end: datetime.date, *, measure: str = "tokens"
) -> dict[str, Any]:
    """One bar per day in [start, end]: `measure` is "tokens" (input + output) or "cost_usd". Days
    without usage get an empty bar, so the chart's axis is the calendar."""
    values: dict[str, Decimal] = {}
    for row in by_day:
        if measure == "tokens":
            values[row["date"]] = Decimal(row["input_tokens"] + row["output_tokens"])
        else:
            values[row["date"]] = Decimal(row["cost_usd"])
    days = [start + datetime.timedelta(days=i) for i in range((end - start).days + 1)]
    top = max(values.values(), default=Decimal(0)) or Decimal(1)
    slot = WIDTH / max(1, len(days))
    usable = HEIGHT - PAD_TOP - PAD_BOTTOM
    bars = []
    for i, day in enumerate(days):
        value = values.get(day.isoformat(), Decimal(0))
        h = round(float(value / top) * usable, 1)
        bars.append(
            {
                "x": round(i * slot + slot * 0.15, 1),
                "y": round(PAD_TOP + usable - h, 1),
                "width": round(slot * 0.7, 1),
                "height": h,
                "label": f"{day.isoformat()}: {value.normalize():f} {'tokens' if measure == 'tokens' else 'USD'}",
                "day": day.day,
                "tick": day.day == 1 or day.day % 5 == 0,
                "tx": round(i * slot + slot / 2, 1),
            }
        )
    return {"width": WIDTH, "height": HEIGHT, "base": HEIGHT - PAD_BOTTOM, "bars": bars, "max": top}
