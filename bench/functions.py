"""Python task functions used by the benchmark's workloads."""

from __future__ import annotations


def fib(n: int) -> int:
    """Naive recursive Fibonacci: a small, fixed amount of CPU work."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)
