"""``lshcore plugins``: what is registered, which plugin it came from, and whether it is usable."""

from __future__ import annotations

import json
from typing import Any

import click

from lshcore import registry
from lshcore.errors import LSHError

__all__ = ["plugins", "plugin_report"]

# section title of each registration kind, in display order
SECTIONS = {"hash family": "families", "transform": "transforms", "backend": "backends"}


def _describe(reg: registry.Registration) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": reg.name,
        "plugin": reg.plugin,
        "origin": reg.origin,
        "usable": True,
        "reason": "",
    }
    if reg.kind == "backend":
        row["usable"] = bool(reg.obj.available())
        row["reason"] = reg.obj.why_unavailable()
    elif reg.kind == "hash family":
        row["measure"] = getattr(reg.obj, "measure", "")
        row["sparse"] = bool(getattr(reg.obj, "supports_sparse", False))
    return row


def plugin_report() -> dict[str, Any]:
    """Every registration by section (families, transforms, backends), plus the plugins.

    Each row: name, plugin, origin ("built-in", "entry point ...", "run time"), usable,
    reason (why a backend is unusable); families add measure and sparse.
    """
    report: dict[str, Any] = {
        "autoload": registry.autoload_enabled(),
        "plugins": registry.plugins(),
    }
    for kind, section in SECTIONS.items():
        regs = registry.registrations(kind)
        report[section] = [_describe(regs[name]) for name in sorted(regs)]
    return report


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return lines


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def plugins(as_json: bool) -> None:
    """List hash families, transforms and backends, where each came from, and if usable."""
    try:
        report = plugin_report()
    except LSHError as exc:  # a broken plugin: say which, without a traceback
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    for section in SECTIONS.values():
        rows = [
            {**row, "usable": "yes" if row["usable"] else f"no: {row['reason']}"}
            for row in report[section]
        ]
        columns = ["name", "measure", "plugin", "usable"] if section == "families" else []
        columns = columns or ["name", "plugin", "usable"]
        click.echo(f"{section} ({len(rows)}):")
        for line in _table(rows, columns):
            click.echo(f"  {line}")
        click.echo()
    click.echo("plugins:")
    for name, origin in sorted(report["plugins"].items()):
        click.echo(f"  {name}: {origin}")
    if not report["autoload"]:
        click.echo(f"(entry-point plugins not loaded: {registry.AUTOLOAD_ENV} is set)")
