"""The ``lshcore`` command line, on click: one module per command, attached here."""

from __future__ import annotations

import importlib

import click

# (module, attribute) of each command attached to the top-level group
_COMMANDS = [
    ("lshcore.cli.plugins", "plugins"),
    ("lshcore.cli.index", "index_demo"),
    ("lshcore.cli.train", "train"),
    ("lshcore.cli.train", "demo"),
    ("lshcore.cli.memory", "memory"),
    ("lshcore.cli.data", "data"),
]


@click.group()
@click.version_option(package_name="lshcore")
def main() -> None:
    """lshcore: hashing-based deep learning."""


for _module, _attr in _COMMANDS:
    main.add_command(getattr(importlib.import_module(_module), _attr))
