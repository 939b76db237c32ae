"""``pip install .`` gives one package ``lshcore`` with the same modules as ``pip install -e .``.

The folders ``kernels/``, ``plugins/``, ``adapters/``, ``memory/`` map to subpackages of
``lshcore`` (pyproject ``package-dir``); nothing may be installed at the top level under
those names, and ``plugins/examples/`` (an external distribution) stays out.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("lshcore.kernels", "lshcore.plugins", "lshcore.adapters", "lshcore.memory")
BARE = ("kernels", "memory", "adapters", "plugins", "examples")


def setuptools_config(root: Path = ROOT) -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return list(config["packages"]), dict(config.get("package-dir", {}))


def package_folder(package: str, package_dir: dict[str, str], root: Path = ROOT) -> Path:
    """The source folder setuptools maps ``package`` to."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return root / package_dir[prefix] / Path(*parts[cut:])
    return root / package_dir.get("", ".") / Path(*parts)


def walk_modules(package: str, folder: Path) -> set[str]:
    """Modules importable under ``package`` from ``folder``, through regular packages."""
    found = {package}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".py" and path.stem != "__init__":
            found.add(f"{package}.{path.stem}")
        elif path.is_dir() and (path / "__init__.py").exists() and path.name.isidentifier():
            found |= walk_modules(f"{package}.{path.name}", path)
    return found


def editable_modules(root: Path) -> set[str]:
    """What an editable install of ``root`` exposes: every module in the package-dir folders."""
    packages, package_dir = setuptools_config(root)
    modules: set[str] = set()
    for package in packages:
        modules |= walk_modules(package, package_folder(package, package_dir, root))
    return modules


def copy_source(dest: Path) -> Path:
    """The project files a build reads, without build/ leftovers or caches."""
    packages, package_dir = setuptools_config()
    folders = {package_folder(p, package_dir).relative_to(ROOT).parts[0] for p in packages}
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in ["pyproject.toml", "README.md", *sorted(folders)]:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --no-build-isolation --target <tmp> .`` of a copy of the tree."""
    base = tmp_path_factory.mktemp("packaging")
    source = copy_source(base / "src")
    target = base / "target"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
        + ["--no-compile", "--disable-pip-version-check", "-q", "--target", str(target)]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return target


def installed_modules(target: Path) -> set[str]:
    modules = set()
    for path in (target / "lshcore").rglob("*.py"):
        parts = path.relative_to(target).with_suffix("").parts
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_one_top_level_package(installed: Path):
    top = {p.name for p in installed.iterdir()}
    assert "lshcore" in top
    assert not top & set(BARE), f"bare top-level names installed: {sorted(top & set(BARE))}"
    dist_info = [name for name in top if name.endswith(".dist-info")]
    assert len(dist_info) == 1
    assert top <= {"lshcore", "bin", *dist_info}, sorted(top)
    record = (installed / dist_info[0] / "RECORD").read_text().splitlines()
    # pip records the console script relative to the temporary scheme (../../bin/lshcore)
    files = [line.split(",")[0] for line in record if line]
    roots = {Path(f).parts[0] for f in files if not f.startswith("../")}
    assert {Path(f).name for f in files if f.startswith("../")} <= {"lshcore"}, files
    assert roots <= {"lshcore", "bin", dist_info[0]}, sorted(roots)
    top_level = (installed / dist_info[0] / "top_level.txt").read_text().split()
    assert top_level == ["lshcore"]
    entry_points = (installed / dist_info[0] / "entry_points.txt").read_text()
    assert "lshcore = lshcore.cli:main" in entry_points


def test_installed_modules_equal_editable_modules(installed: Path):
    got = installed_modules(installed)
    for package in SUBPACKAGES:
        assert package in got
    expected = editable_modules(installed.parent / "src")  # the tree that was built
    assert got == expected, (
        f"only in the wheel: {sorted(got - expected)}; "
        f"only in the editable install: {sorted(expected - got)}"
    )
    assert not any(".examples" in m for m in got)  # the example plugin is its own distribution


def test_editable_finder_maps_the_package_dirs():
    """The editable install in this venv (when there is one) maps exactly package-dir."""
    site = Path(sysconfig.get_paths()["purelib"])
    finders = sorted(site.glob("__editable___lshcore_*_finder.py"))
    if not finders:
        pytest.skip("lshcore is not installed in editable mode in this environment")
    tree = ast.parse(finders[0].read_text())
    mapping = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign | ast.Assign)
        and "MAPPING" in ast.unparse(node.target if isinstance(node, ast.AnnAssign) else node)
    )
    packages, package_dir = setuptools_config()
    if Path(next(iter(mapping.values()))).parent != ROOT:
        pytest.skip(f"the editable install points at another checkout: {mapping}")
    expected = {p: str(package_folder(p, package_dir)) for p in packages}
    assert set(mapping) <= set(expected)
    for package, folder in expected.items():
        if package in mapping:
            assert mapping[package] == folder
        else:  # a plain subfolder of a mapped package: found through its parent's path
            parent, _, leaf = package.rpartition(".")
            assert str(Path(expected[parent]) / leaf) == folder, package


def test_installed_copy_imports_as_subpackages(installed: Path):
    script = (
        "import importlib.util, json, lshcore, lshcore.kernels, lshcore.plugins.builtin;"
        "import lshcore.adapters, lshcore.memory;"
        "print(json.dumps({'files': [lshcore.__file__, lshcore.kernels.__file__],"
        " 'bare': [importlib.util.find_spec(n) is not None for n in "
        f"{BARE!r}], 'srp': 'srp' in lshcore.families()}}))"
    )
    env = dict(os.environ, PYTHONPATH=str(installed), LSHCORE_DISABLE_PLUGIN_AUTOLOAD="1")
    run = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=installed,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert all(Path(f).is_relative_to(installed) for f in result["files"]), result["files"]
    assert result["bare"] == [False] * len(BARE)
    assert result["srp"] is True


# -- the example external plugin (plugins/examples/) -----------------------------------

EXAMPLE = ROOT / "plugins" / "examples" / "lshcore-classic-minhash"

PLUGIN_SCRIPT = """
import json
import numpy as np
import lshcore
from lshcore.cli.plugins import plugin_report
out = {"present": "classic_minhash" in lshcore.families()}
if out["present"]:
    import lshcore_classic_minhash
    fam = lshcore.hash_family("classic_minhash", 16, 2, 3, seed=1)
    x = (np.random.default_rng(0).random((5, 16)) < 0.3).astype(np.float32)
    codes = fam.hash(x)
    out["codes"] = [list(codes.shape), str(codes.dtype), int(codes.min()), int(codes.max())]
    out["num_buckets"] = fam.num_buckets
    out["module"] = lshcore_classic_minhash.__file__
    row = [r for r in plugin_report()["families"] if r["name"] == "classic_minhash"][0]
    out["row"] = [row["plugin"], row["origin"], row["measure"]]
    from lshcore.testing import check_hash_family
    out["kit"] = check_hash_family("classic_minhash").failed
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed with pip into its own target folder."""
    base = tmp_path_factory.mktemp("example")
    source = base / "src"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    target = base / "target"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
        + ["--no-compile", "--disable-pip-version-check", "-q", "--target", str(target)]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return target


def run_with_plugin(target: Path, autoload_off: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("LSHCORE_BACKEND", None)
    env["LSHCORE_DISABLE_PLUGIN_AUTOLOAD"] = "1" if autoload_off else "0"
    run = subprocess.run(
        [sys.executable, "-c", PLUGIN_SCRIPT],
        env=env,
        cwd=target.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    result: dict = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_example_plugin_found_through_its_entry_point(example_installed: Path):
    names = {p.name for p in example_installed.iterdir()}
    assert "lshcore_classic_minhash.py" in names
    result = run_with_plugin(example_installed, autoload_off=False)
    assert result["present"] is True
    assert Path(result["module"]).parent == example_installed
    assert result["codes"][:2] == [[5, 3], "int64"]
    assert 0 <= result["codes"][2] <= result["codes"][3] < result["num_buckets"] == 17**2
    plugin, origin, measure = result["row"]
    assert plugin == "classic_minhash" and measure == "jaccard"
    assert origin == "entry point 'lshcore_classic_minhash' (lshcore-classic-minhash 0.1.0)"
    assert result["kit"] == []  # check_hash_family by name passed (it raises otherwise)


def test_example_plugin_absent_when_autoload_disabled(example_installed: Path):
    assert run_with_plugin(example_installed, autoload_off=True) == {"present": False}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_extras_pins_and_make_targets() -> None:
    """The extras, the pinned set CI uses, and the two README commands as the issue sets them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {"torch", "tensorflow", "mxnet", "gpu", "all", "test", "bench"} <= set(extras)
    assert project["scripts"]["lshcore"] == "lshcore.cli:main"

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_normalized(name)] = version
    assert {
        "numpy": "1.26.4",
        "torch": "2.13.0",
        "tensorflow-cpu": "2.21.0",
        "mxnet": "1.9.1",
        "numba": "0.68.1",
        "cupy-cuda12x": "13.6.0",
    }.items() <= pins.items()
    for dep in project["dependencies"]:  # every runtime dependency is pinned too
        name = _normalized(dep.split(">")[0].split("=")[0].split("<")[0].strip())
        assert name in pins, f"{name} is not pinned in constraints.txt"

    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile
    for target in ("venv", "demo", "test"):  # each creates the venv first when missing
        rule = next(ln for ln in makefile.splitlines() if ln.startswith(f"{target}:"))
        assert "$(STAMP)" in rule, rule
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
