"""Functions of the `daily-sales-report` example: extract one day, aggregate, summarise."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date
from typing import Any

REGIONS = ("north", "south", "east", "west")
PRODUCTS = ("basic", "plus", "pro")


def extract(day: str, orders: int) -> list[dict[str, Any]]:
    """The day's orders. Seeded by the date, so a re-run of the same day gives the same data."""
    when = date.fromisoformat(day)
    rng = random.Random(when.toordinal())
    return [
        {
            "region": rng.choice(REGIONS),
            "product": rng.choice(PRODUCTS),
            "amount": round(rng.uniform(5, 500), 2),
        }
        for _ in range(orders)
    ]


def total_by(rows: list[dict[str, Any]], field: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row[field]] += row["amount"]
    return {k: round(v, 2) for k, v in sorted(totals.items())}


def summarise(
    day: str, by_region: dict[str, float], by_product: dict[str, float]
) -> dict[str, Any]:
    total = round(sum(by_region.values()), 2)
    best = max(by_region, key=by_region.__getitem__) if by_region else None
    return {"day": day, "total": total, "best_region": best, "by_product": by_product}
