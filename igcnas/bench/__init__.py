"""Benchmarks (import the submodules: ``igcnas.bench.ops``, ...); nothing heavy is imported here."""

from __future__ import annotations

__all__: list[str] = []
