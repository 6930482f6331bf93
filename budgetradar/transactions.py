"""Guarding the rule that no platform call happens inside a database transaction.

A platform call inside ``transaction.atomic`` holds the transaction (and its row locks:
idempotency keys, the rate-limit bucket) open while a remote server answers, and
couples our commit to a change the platform has already made. ``refuse_inside_transaction``
raises ``RuntimeError`` when called inside one. The outer atomic block that pytest-django
and Django's ``TestCase`` wrap each test in is not a transaction of the code under test,
so it does not count.
"""

from __future__ import annotations

from django.db import transaction


def in_transaction() -> bool:
    """True inside an ``atomic`` block the code itself opened."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return False
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def refuse_inside_transaction(what: str) -> None:
    if in_transaction():
        raise RuntimeError(f"{what} must not run inside transaction.atomic: no platform call inside a transaction")
