"""The plugin registry (pluggy hooks, entry points, run-time plugins) and the backends."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import types
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lshcore
from lshcore.core.backend import Backend
from lshcore.errors import BackendUnavailableError, InputError, PluginError, UnknownNameError
from lshcore.plugins import builtin
from lshcore.registry import catalog
from lshcore.registry import manager as registry

BUILTIN = "lshcore.plugins.builtin"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch):
    """A registry that loads from scratch, without the environment's entry points."""
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")
    registry.reset()
    yield
    registry.reset()


class ConstantFamily(lshcore.HashFamily):
    """A trivial family for registry tests: every vector lands in bucket 0."""

    measure = "cosine"

    def hash(self, x: Any) -> np.ndarray:
        x = self.check_input(x)
        return np.zeros((x.shape[0], self.l), dtype=np.int64)


def make_plugin(name: str, **families: Any) -> types.ModuleType:
    """A plugin module registering ``families`` (name -> class) through the hook."""
    module = types.ModuleType(name)

    @lshcore.hookimpl
    def lshcore_register_hash_families(register):
        for fam_name, cls in families.items():
            register(fam_name, cls)

    module.lshcore_register_hash_families = lshcore_register_hash_families
    return module


def snapshot() -> dict[str, dict[str, Any]]:
    return {
        kind: {n: (r.obj, r.plugin) for n, r in registry.registrations(kind).items()}
        for kind in registry.KINDS
    }


# -- built-ins ------------------------------------------------------------------------


def test_builtins_come_through_the_hooks():
    regs = registry.registrations("hash family")
    assert lshcore.families() == sorted(cls.name for cls in builtin.BUILTIN_FAMILIES)
    assert "srp" in lshcore.families()
    assert regs["srp"].plugin == BUILTIN and regs["srp"].origin == "built-in"
    impls = registry.plugin_manager().hook.lshcore_register_hash_families.get_hookimpls()
    assert BUILTIN in [impl.plugin_name for impl in impls]
    # without the built-in plugin, nothing is registered: there is no side door
    registry.unregister_plugin(BUILTIN)
    assert lshcore.families() == [] and lshcore.backends() == []


def test_every_builtin_is_registered():
    # the list, spelled out: a built-in that failed to import must not just vanish
    assert lshcore.families() == [
        "crosspolytope",
        "dwta",
        "minhash",
        "pstable",
        "sparse_srp",
        "srp",
        "wta",
    ]
    assert lshcore.transforms() == ["sign_alsh", "simple_lsh"]
    assert {"numpy", "numba", "cupy"} == set(lshcore.backends(usable_only=False))


def test_transforms_and_backends_listed():
    assert catalog.transforms() == sorted(cls.name for cls in builtin.BUILTIN_TRANSFORMS)
    assert registry.registrations("transform").keys() == set(catalog.transforms())
    assert {"numpy", "numba"} <= set(lshcore.backends())
    assert "cupy" in lshcore.backends(usable_only=False)
    for reg in registry.registrations("backend").values():
        assert reg.plugin == BUILTIN


def test_public_functions_are_not_shadowed_by_submodules():
    # importing a submodule binds it on the package: a module lshcore/<name>.py would
    # replace the public function lshcore.<name>() once anything imports that module
    subpackages = ("core", "registry", "hashing", "search", "training", "data", "cli", "testing")
    for module in [f"lshcore.{name}" for name in subpackages] + ["lshcore.registry.catalog"]:
        importlib.import_module(module)
    for name in ("families", "transforms", "backends", "hash_family", "transform"):
        value = getattr(lshcore, name)
        assert callable(value), f"lshcore.{name} is shadowed by the module {value!r}"
    assert lshcore.transforms() == catalog.transforms()


def test_unknown_family_lists_known_names():
    with pytest.raises(UnknownNameError) as info:
        lshcore.hash_family("nope", 8, 2, 3)
    assert isinstance(info.value, LookupError)
    message = str(info.value)
    assert "'nope'" in message and "hash families" in message
    for name in lshcore.families():
        assert repr(name) in message


def test_unknown_kind_and_unknown_plugin():
    with pytest.raises(UnknownNameError, match="registration kind"):
        registry.registrations("hash families")
    with pytest.raises(UnknownNameError, match=BUILTIN):
        registry.unregister_plugin("not-a-plugin")


# -- run-time plugins -----------------------------------------------------------------


def test_register_plugin_module_adds_family():
    name = lshcore.register_plugin(make_plugin("my_plugin", constant=ConstantFamily))
    assert name == "my_plugin"
    assert "constant" in lshcore.families()
    reg = registry.registrations("hash family")["constant"]
    assert (reg.plugin, reg.origin, reg.obj) == ("my_plugin", "run time", ConstantFamily)
    fam = lshcore.hash_family("constant", 4, 2, 3, seed=1)
    codes = fam.hash(np.ones((5, 4), dtype=np.float32))
    assert codes.shape == (5, 3) and codes.dtype == np.int64
    assert registry.plugins()["my_plugin"] == "run time"
    lshcore.unregister_plugin("my_plugin")
    assert "constant" not in lshcore.families()


def test_register_plugin_object_with_methods():
    class Plugin:
        @lshcore.hookimpl
        def lshcore_register_hash_families(self, register):
            register("constant_obj", ConstantFamily)

    lshcore.register_plugin(Plugin(), name="object-plugin")
    assert registry.registrations("hash family")["constant_obj"].plugin == "object-plugin"


def test_plugin_that_raises_leaves_registry_unchanged():
    before = snapshot()

    @lshcore.hookimpl
    def lshcore_register_hash_families(register):
        register("half_done", ConstantFamily)  # registered, then the plugin fails
        raise RuntimeError("boom")

    bad = types.ModuleType("bad_plugin")
    bad.lshcore_register_hash_families = lshcore_register_hash_families
    with pytest.raises(PluginError, match=r"'bad_plugin'.*RuntimeError: boom"):
        lshcore.register_plugin(bad)
    assert snapshot() == before
    assert "bad_plugin" not in registry.plugins()
    # the name is free again: a fixed plugin of that name registers fine
    lshcore.register_plugin(make_plugin("bad_plugin", half_done=ConstantFamily))
    assert "half_done" in lshcore.families()


def test_duplicate_of_builtin_names_both_plugins():
    before = snapshot()
    with pytest.raises(PluginError) as info:
        lshcore.register_plugin(make_plugin("copycat", srp=ConstantFamily))
    assert "'copycat'" in str(info.value) and repr(BUILTIN) in str(info.value)
    assert snapshot() == before
    assert registry.registrations("hash family")["srp"].plugin == BUILTIN


def test_duplicate_between_two_plugins_and_within_one():
    lshcore.register_plugin(make_plugin("first", shared=ConstantFamily))
    with pytest.raises(PluginError, match=r"'second'.*'shared'.*'first'"):
        lshcore.register_plugin(make_plugin("second", shared=ConstantFamily))

    @lshcore.hookimpl
    def lshcore_register_hash_families(register):
        register("twice", ConstantFamily)
        register("twice", ConstantFamily)

    twice = types.ModuleType("twice_plugin")
    twice.lshcore_register_hash_families = lshcore_register_hash_families
    with pytest.raises(PluginError, match=r"'twice_plugin'.*'twice'.*'twice_plugin'"):
        lshcore.register_plugin(twice)
    assert "twice" not in lshcore.families()


def test_same_plugin_name_twice_is_refused():
    lshcore.register_plugin(make_plugin("dup", a1=ConstantFamily))
    with pytest.raises(PluginError, match="'dup' is already registered"):
        lshcore.register_plugin(make_plugin("dup", a2=ConstantFamily))
    assert "a2" not in lshcore.families()


@pytest.mark.parametrize(
    "obj",
    [object(), int, ConstantFamily(4, 2, 2)],  # not a class / not a HashFamily / an instance
    ids=["object", "int", "instance"],
)
def test_wrong_object_type_is_refused(obj):
    before = snapshot()
    with pytest.raises(PluginError, match=r"'wrong'.*not a HashFamily subclass"):
        lshcore.register_plugin(make_plugin("wrong", wrongfam=obj))
    assert snapshot() == before


def test_unmarked_or_misspelled_hooks_are_reported():
    unmarked = types.ModuleType("unmarked")
    unmarked.lshcore_register_hash_families = lambda register: register("u", ConstantFamily)
    with pytest.raises(PluginError, match=r"forget @lshcore\.hookimpl"):
        lshcore.register_plugin(unmarked)

    misspelled = types.ModuleType("misspelled")
    misspelled.lshcore_register_families = lshcore.hookimpl(lambda register: None)
    with pytest.raises(PluginError, match="unknown hook.*lshcore_register_families"):
        lshcore.register_plugin(misspelled)
    assert "misspelled" not in registry.plugins() and "unmarked" not in registry.plugins()


def test_register_after_hook_returned_is_refused():
    kept: list[Any] = []

    @lshcore.hookimpl
    def lshcore_register_hash_families(register):
        kept.append(register)

    module = types.ModuleType("keeper")
    module.lshcore_register_hash_families = lshcore_register_hash_families
    lshcore.register_plugin(module)
    with pytest.raises(PluginError, match="after its hook returned"):
        kept[0]("late", ConstantFamily)
    assert "late" not in lshcore.families()


# -- entry points ---------------------------------------------------------------------


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch):
    """Replace the entry-point scan with given entry points; counts scans and hook calls."""
    calls = {"scans": 0, "hooks": 0}

    @lshcore.hookimpl
    def lshcore_register_hash_families(register):
        calls["hooks"] += 1
        register("from_entry_point", ConstantFamily)

    module = types.ModuleType("fake_lshcore_plugin")
    module.lshcore_register_hash_families = lshcore_register_hash_families
    monkeypatch.setitem(sys.modules, "fake_lshcore_plugin", module)
    eps = [EntryPoint(name="fake", value="fake_lshcore_plugin", group="lshcore")]

    def scan() -> list[EntryPoint]:
        calls["scans"] += 1
        return list(eps)

    monkeypatch.setattr(registry, "_plugin_entry_points", scan)
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "0")
    return calls, eps


def test_entry_points_load_lazily_and_once(fake_entry_points):
    calls, _ = fake_entry_points
    registry.reset()
    import lshcore as again  # noqa: F401  (importing does not load plugins)

    lshcore.get_backend  # noqa: B018  (nor does touching an attribute)
    assert calls == {"scans": 0, "hooks": 0}
    assert "from_entry_point" in lshcore.families()
    assert calls == {"scans": 1, "hooks": 1}
    lshcore.families()
    lshcore.hash_family("from_entry_point", 4, 1, 1)
    registry.registrations("backend")
    assert calls == {"scans": 1, "hooks": 1}
    reg = registry.registrations("hash family")["from_entry_point"]
    assert reg.plugin == "fake" and reg.origin.startswith("entry point 'fake_lshcore_plugin'")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_disable_autoload_env(fake_entry_points, monkeypatch, value):
    calls, _ = fake_entry_points
    monkeypatch.setenv(registry.AUTOLOAD_ENV, value)
    registry.reset()
    assert "from_entry_point" not in lshcore.families()
    assert "srp" in lshcore.families()  # built-ins still load
    assert calls["scans"] == 0


def test_broken_entry_point_names_it(fake_entry_points):
    calls, eps = fake_entry_points
    eps.append(EntryPoint(name="broken", value="no_such_module_for_lshcore", group="lshcore"))
    registry.reset()
    for _ in range(2):  # fails the same way every time: nothing half-loaded stays behind
        with pytest.raises(PluginError) as info:
            lshcore.families()
        message = str(info.value)
        assert "'broken'" in message and "no_such_module_for_lshcore" in message
        assert "ModuleNotFoundError" in message
    assert isinstance(info.value.__cause__, ImportError)


def test_entry_point_whose_hook_raises(fake_entry_points, monkeypatch):
    _, eps = fake_entry_points

    @lshcore.hookimpl
    def lshcore_register_hash_families(register):
        raise ValueError("cannot register")

    module = types.ModuleType("raising_plugin")
    module.lshcore_register_hash_families = lshcore_register_hash_families
    monkeypatch.setitem(sys.modules, "raising_plugin", module)
    eps[:] = [EntryPoint(name="raiser", value="raising_plugin", group="lshcore")]
    registry.reset()
    with pytest.raises(PluginError, match=r"'raiser' raised in lshcore_register_hash_families"):
        lshcore.families()


def test_entry_point_clashing_with_builtin_family(fake_entry_points, monkeypatch):
    _, eps = fake_entry_points
    monkeypatch.setitem(sys.modules, "clash_plugin", make_plugin("clash", srp=ConstantFamily))
    eps.append(EntryPoint(name="clash", value="clash_plugin", group="lshcore"))
    registry.reset()
    with pytest.raises(PluginError, match=rf"'clash'.*'srp'.*'{BUILTIN}'"):
        lshcore.families()


def write_fake_distribution(root: Path) -> None:
    """A minimal installed distribution (dist-info + module) with an ``lshcore`` entry point."""
    (root / "fake_ep_plugin.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import lshcore

            class Zero(lshcore.HashFamily):
                def hash(self, x):
                    return np.zeros((np.asarray(x).shape[0], self.l), dtype=np.int64)

            @lshcore.hookimpl
            def lshcore_register_hash_families(register):
                register("zero_ep", Zero)
            """
        )
    )
    info = root / "fake_ep_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ep-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lshcore]\nzero = fake_ep_plugin\n")


def test_real_entry_point_discovery_in_subprocess(tmp_path):
    write_fake_distribution(tmp_path)
    script = (
        "import lshcore; from lshcore import registry;"
        "print('zero_ep' in lshcore.families(),"
        " registry.plugins().get('zero', '-'))"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    outputs = {}
    for flag in ("0", "1"):
        env[registry.AUTOLOAD_ENV] = flag
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        outputs[flag] = run.stdout.strip()
    assert outputs["0"] == "True entry point 'fake_ep_plugin' (fake-ep-plugin 1.0)"
    assert outputs["1"] == "False -"


# -- backends -------------------------------------------------------------------------


def test_numpy_and_numba_backends():
    numpy_backend = lshcore.get_backend("numpy")
    assert numpy_backend.xp is np and numpy_backend.available()
    numba_backend = lshcore.get_backend("numba")
    assert numba_backend.available() and numba_backend.why_unavailable() == ""
    assert numba_backend.xp is np
    assert numba_backend.kernels.__name__ == "lshcore.kernels.numba_cpu"
    numba = importlib.import_module("numba")  # the package the backend claims is there
    assert numba.config.NUMBA_NUM_THREADS >= 1


def test_default_backend(monkeypatch):
    monkeypatch.delenv("LSHCORE_BACKEND", raising=False)
    assert lshcore.get_backend().name == "numba"
    monkeypatch.setenv("LSHCORE_BACKEND", "numpy")
    assert lshcore.get_backend().name == "numpy"
    monkeypatch.setenv("LSHCORE_BACKEND", "nonsense")
    with pytest.raises(UnknownNameError, match="'nonsense'"):
        lshcore.get_backend()


def test_cupy_backend_reports_unavailable_without_crashing():
    backend = registry.registrations("backend")["cupy"].obj
    assert "cupy" in lshcore.backends(usable_only=False)
    usable = backend.available()
    assert ("cupy" in lshcore.backends()) == usable
    if usable:  # a machine with a CUDA device
        cp = lshcore.get_backend("cupy").xp
        assert cp.__name__ == "cupy"
        return
    reason = backend.why_unavailable()
    assert reason
    with pytest.raises(BackendUnavailableError) as info:
        lshcore.get_backend("cupy")
    assert isinstance(info.value, ImportError)
    assert "'cupy'" in str(info.value) and reason in str(info.value)


def test_unknown_backend():
    with pytest.raises(UnknownNameError) as info:
        lshcore.get_backend("tpu")
    assert "'numpy'" in str(info.value) and "'cupy'" in str(info.value)
    with pytest.raises(UnknownNameError):
        lshcore.get_backend(3)  # type: ignore[arg-type]


class ExplodingBackend(Backend):
    def _probe(self) -> tuple[bool, str]:
        raise RuntimeError("driver exploded")


def test_backend_whose_probe_raises_is_unavailable_not_a_crash():
    class Plugin:
        @lshcore.hookimpl
        def lshcore_register_backends(self, register):
            register("exploding", ExplodingBackend("exploding", "lshcore.kernels.numpy_ref"))
            register(
                "missing",
                Backend("missing", "lshcore.kernels.numpy_ref", requires=("no_such_pkg_lshcore",)),
            )

    lshcore.register_plugin(Plugin(), name="backend-plugin")
    assert "exploding" not in lshcore.backends() and "missing" not in lshcore.backends()
    assert {"exploding", "missing"} <= set(lshcore.backends(usable_only=False))
    with pytest.raises(BackendUnavailableError, match="driver exploded"):
        lshcore.get_backend("exploding")
    with pytest.raises(BackendUnavailableError, match="not installed: no_such_pkg_lshcore"):
        lshcore.get_backend("missing")


def test_backend_registration_must_be_a_backend():
    class Plugin:
        @lshcore.hookimpl
        def lshcore_register_backends(self, register):
            register("fake", "numpy")

    with pytest.raises(PluginError, match="not a Backend instance"):
        lshcore.register_plugin(Plugin(), name="bad-backend")
    assert "fake" not in lshcore.backends(usable_only=False)


@pytest.mark.parametrize("k", [1, 6, 8, 16, 24, 25, 32])
def test_srp_fast_paths_match_reference(k, monkeypatch):
    """SRP.hash's CPU fast paths (row blocks, byte packing) give the reference codes."""
    from lshcore import family_projection

    monkeypatch.setattr(family_projection, "_HASH_BLOCK_FLOATS", 64 * k * 3)  # force blocks
    rng = np.random.default_rng(k)
    x = rng.standard_normal((1000, 12)).astype(np.float32)
    x[0] = 0.0  # projections of exactly 0 count as bit 1
    for backend in ("numpy", "numba"):
        fam = lshcore.hash_family("srp", 12, k, 3, seed=2, backend=backend)
        bits = (x @ fam.projections >= 0).reshape(len(x), 3, k).astype(np.int64)
        want = (bits << np.arange(k, dtype=np.int64)).sum(axis=2)
        got = fam.hash(x)
        assert got.dtype == np.int64 and np.array_equal(got, want)
        assert np.array_equal(fam.hash(x[:5]), want[:5])  # one block only
        assert np.array_equal(fam.hash(np.asfortranarray(x.astype(np.float64))), want)
        assert np.array_equal(fam.hash(x.tolist()), want)
        bad = x.copy()
        bad[900, 3] = np.nan  # in a late block: still rejected
        with pytest.raises(InputError, match="x: contains NaN"):
            fam.hash(bad)
        with pytest.raises(InputError, match=r"x: expected shape \(n, 12\)"):
            fam.hash(np.zeros((1000, 13), np.float32))
