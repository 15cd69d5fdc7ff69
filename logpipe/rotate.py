"""Rotation, one owner: plan, rename / copytruncate, streaming zstd, retention, locks, dry-run."""

from __future__ import annotations

from dataclasses import dataclass, field

from logpipe.errors import UsageError


@dataclass
class RotateOptions:
    """What ``logpipe rotate`` was asked to do (filled by cli.py)."""

    paths: list[str] = field(default_factory=list)
    retain: int = 7
    max_size: int | None = None
    daily: bool = False
    max_age_days: int | None = None
    copytruncate: bool = False
    compress: bool = True
    dry_run: bool = False
    state_dir: str = ""


def main(opts: RotateOptions) -> int:
    """Run ``logpipe rotate``; returns the exit status."""
    raise UsageError("rotate is not built yet")
