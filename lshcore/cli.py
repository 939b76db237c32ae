"""The ``lshcore`` command line (click)."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="lshcore")
def main() -> None:
    """lshcore: hashing-based deep learning."""
