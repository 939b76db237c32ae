"""Every public import path from before the move into subpackages still works, and
gives the same objects as the new path."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from lshcore._compat import MOVED

# (old module, public names users import from it)
OLD_PATHS = [
    ("lshcore.backend", ["Backend", "get_backend", "backends", "to_numpy", "default_backend_name"]),
    ("lshcore.catalog", ["families", "transforms", "hash_family", "transform", "family_class"]),
    ("lshcore.hookspecs", ["hookimpl", "hookspec", "PROJECT_NAME"]),
    ("lshcore.registry", ["lookup", "registrations", "register_plugin", "plugins", "reset"]),
    ("lshcore.validation", ["as_batch", "as_ids", "check_int", "check_float", "check_choice"]),
    ("lshcore.fileformat", ["save_arrays", "load_arrays"]),
    ("lshcore.family", ["HashFamily", "Transform"]),
    ("lshcore.family_projection", ["SRP", "SparseSRP", "CrossPolytope", "PStable"]),
    ("lshcore.family_wta", ["WTA", "DWTA"]),
    ("lshcore.family_minhash", ["MinHash"]),
    ("lshcore.mips", ["SimpleLSH", "SignALSH"]),
    ("lshcore.tables", ["LSHTables", "Candidates"]),
    ("lshcore.index", ["LSHIndex", "IndexParams"]),
    ("lshcore.selector", ["ActiveSelector", "ActiveSet", "SparseBatch"]),
    ("lshcore.schedule", ["parse_schedule"]),
    ("lshcore.layer", ["HashedLayer", "DenseLayer"]),
    ("lshcore.model", ["Model"]),
    ("lshcore.optim", ["make_optimizer"]),
    ("lshcore.engine", ["Trainer"]),
    ("lshcore.datasets", ["load_dataset", "load_mnist"]),
    ("lshcore.cli", ["main"]),
    ("lshcore.cli_plugins", ["plugins"]),
    ("lshcore.cli_index", ["index_demo"]),
    ("lshcore.cli_train", ["train", "demo"]),
    ("lshcore.testing", ["check_hash_family"]),
    ("lshcore.memory", ["LSHMemory"]),
    ("lshcore.memory.core", ["LSHMemory"]),
    ("lshcore.memory.cli", ["memory"]),
    ("lshcore.kernels.numpy_ref", []),
    ("lshcore.plugins.builtin", []),
]


@pytest.mark.parametrize("module, names", OLD_PATHS, ids=[m for m, _ in OLD_PATHS])
def test_old_path_imports(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name} is gone"
    if module in MOVED:
        new = importlib.import_module(MOVED[module])
        assert mod is new  # the same module object: same classes, same globals
        assert mod.__spec__.name == MOVED[module]
        for name in names:
            assert getattr(mod, name) is getattr(new, name)


def test_from_import_of_an_old_path_in_a_fresh_interpreter() -> None:
    code = (
        "from lshcore.selector import ActiveSelector\n"
        "from lshcore.training.selector import ActiveSelector as New\n"
        "from lshcore.memory.keras import MemoryLayer\n"
        "import lshcore.family_wta as w, lshcore.hashing.wta as n\n"
        "assert ActiveSelector is New and w is n\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_old_path_still_raises() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("lshcore.no_such_module")
