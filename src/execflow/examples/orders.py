"""Functions of the `purchase-order` and `price-line` examples."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

log = logging.getLogger("execflow.examples.orders")


def quote(sku: str, quantity: int) -> dict[str, Any]:
    """A line's price. A stand-in for a pricing service: the same SKU always costs the same."""
    cents = 100 + int(hashlib.sha256(sku.encode()).hexdigest()[:6], 16) % 9_900
    unit = cents / 100
    log.info("quoted %s x%d at %.2f", sku, quantity, unit)
    return {
        "sku": sku,
        "quantity": quantity,
        "unit_price": unit,
        "amount": round(unit * quantity, 2),
    }


def place(order_id: str, sku: str, quantity: int) -> dict[str, Any]:
    """Place one line with the supplier (here: a confirmation number made from the line)."""
    ref = hashlib.sha256(f"{order_id}/{sku}/{quantity}".encode()).hexdigest()[:10]
    log.info("placed %s x%d for %s as %s", sku, quantity, order_id, ref)
    return {"sku": sku, "confirmation": ref}


def summarize(
    order_id: str, lines: list[dict[str, Any]], approval: dict[str, Any]
) -> dict[str, Any]:
    total = round(sum(line["amount"] for line in lines), 2)
    return {
        "order_id": order_id,
        "lines": len(lines),
        "total": total,
        "approved": bool(approval.get("approved")),
        "approved_by": approval.get("by"),
    }
