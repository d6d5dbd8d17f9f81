"""Auto attendants (placeholder until the menu lands)."""

from __future__ import annotations

from typing import Any


async def run_attendant(call: Any, context: Any) -> None:
    await call.hangup()
