"""``lshcore plugins``: the listing of families, transforms and backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import lshcore
from lshcore.cli import main
from lshcore.core.backend import Backend
from lshcore.plugins import builtin
from lshcore.registry import catalog
from lshcore.registry import manager as registry

BUILTIN = "lshcore.plugins.builtin"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")
    registry.reset()
    yield
    registry.reset()


class Ones(lshcore.HashFamily):
    measure = "hamming"

    def hash(self, x: Any) -> np.ndarray:
        return np.ones((np.asarray(x).shape[0], self.l), dtype=np.int64)


class NoDevice(Backend):
    def _probe(self) -> tuple[bool, str]:
        return False, "no widget attached"


class ExtraPlugin:
    @lshcore.hookimpl
    def lshcore_register_hash_families(self, register):
        register("ones", Ones)

    @lshcore.hookimpl
    def lshcore_register_backends(self, register):
        register("widget", NoDevice("widget", "lshcore.kernels.numpy_ref"))


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(main, ["plugins", *args])
    return result


def test_json_lists_every_registration_with_its_plugin():
    lshcore.register_plugin(ExtraPlugin(), name="extra")
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    families = {row["name"]: row for row in report["families"]}
    assert set(families) == {c.name for c in builtin.BUILTIN_FAMILIES} | {"ones"}
    assert families["srp"]["plugin"] == BUILTIN and families["srp"]["origin"] == "built-in"
    assert families["ones"]["plugin"] == "extra" and families["ones"]["measure"] == "hamming"
    assert families["ones"]["origin"] == "run time"
    assert [row["name"] for row in report["transforms"]] == catalog.transforms()
    backends = {row["name"]: row for row in report["backends"]}
    assert backends["numpy"]["usable"] is True and backends["numpy"]["reason"] == ""
    assert backends["widget"] == {
        "name": "widget",
        "plugin": "extra",
        "origin": "run time",
        "usable": False,
        "reason": "no widget attached",
    }
    cupy = backends["cupy"]
    assert cupy["usable"] == ("cupy" in lshcore.backends())
    assert cupy["usable"] or cupy["reason"]  # unusable always comes with a reason
    assert report["plugins"] == {BUILTIN: "built-in", "extra": "run time"}


def test_text_output_shows_plugin_and_reason():
    lshcore.register_plugin(ExtraPlugin(), name="extra")
    result = invoke()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    ones = next(line for line in lines if line.split()[:1] == ["ones"])
    assert ones.split() == ["ones", "hamming", "extra", "yes"]
    widget = next(line for line in lines if line.split()[:1] == ["widget"])
    assert widget.split()[1:] == ["extra", "no:", "no", "widget", "attached"]
    assert any(line.split()[:1] == ["srp"] and BUILTIN in line for line in lines)
    assert f"{registry.AUTOLOAD_ENV} is set" in result.output


def test_broken_plugin_gives_a_clean_error(monkeypatch):
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "0")
    monkeypatch.setattr(
        registry,
        "_plugin_entry_points",
        lambda: [EntryPoint(name="broken", value="no_such_lshcore_plugin", group="lshcore")],
    )
    registry.reset()
    result = invoke()
    assert result.exit_code == 1
    assert "Error: plugin 'broken'" in result.output and "Traceback" not in result.output


def test_python_dash_m_lshcore_plugins():
    env = dict(os.environ)
    env.pop(registry.AUTOLOAD_ENV, None)
    run = subprocess.run(
        [sys.executable, "-m", "lshcore", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["autoload"] is True
    assert "srp" in [row["name"] for row in report["families"]]
    assert {"numpy", "numba", "cupy"} <= {row["name"] for row in report["backends"]}
