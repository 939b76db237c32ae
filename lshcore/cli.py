"""The ``lshcore`` command line, on click.

Each area keeps its commands in its own module; they are attached here.
"""

from __future__ import annotations

import importlib

import click

# (module, attribute) of each command attached to the top-level group
_COMMANDS = [
    ("lshcore.cli_plugins", "plugins"),
    ("lshcore.cli_index", "index_demo"),
    ("lshcore.cli_train", "train"),
    ("lshcore.cli_train", "demo"),
    ("lshcore.memory.cli", "memory"),
]


@click.group()
@click.version_option(package_name="lshcore")
def main() -> None:
    """lshcore: hashing-based deep learning."""


for _module, _attr in _COMMANDS:
    main.add_command(getattr(importlib.import_module(_module), _attr))
