"""The package's imports run one way (import-linter contracts in pyproject.toml) with no cycles, and light
entry points stay light: ``galaxy-pipeline --help`` and ``import galaxy_pipeline.hsc`` load no torch."""

import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parents[1]


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), or modules importing themselves."""
    modules = sorted(module for module in graph.modules if module.split(".")[0] == package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported.split(".")[0] != package:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph.find_modules_directly_imported_by(module):
                groups.append(sorted(group))

    for module in modules:
        if module not in index:
            visit(module)
    return groups


def test_import_contracts_are_kept():
    """Every contract of [tool.importlinter] holds: a back edge between layers, or a torch import in a light
    module, fails here with import-linter's report."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_cover_every_top_level_module():
    """A new module must be placed in a layer, or the direction of its imports is never checked."""
    configuration = read_configuration(str(ROOT / "pyproject.toml"))
    stage_contract = next(c for c in configuration["contracts_options"] if c.get("containers") is None)
    placed = {name.strip() for layer in stage_contract["layers"] for name in layer.split("|")}
    modules = {
        f"galaxy_pipeline.{path.stem if path.is_file() else path.name}"
        for path in (ROOT / "galaxy_pipeline").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()
    }
    assert modules - placed == set()


def test_no_import_cycles():
    graph = grimp.build_graph("galaxy_pipeline", cache_dir=None)
    assert _cycles(graph, "galaxy_pipeline") == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: two modules importing each other are reported."""
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph, "pkg") == [["pkg.a", "pkg.b"]]


@pytest.mark.parametrize(
    "code",
    [
        "import galaxy_pipeline.hsc",
        "import galaxy_pipeline",
        "import galaxy_pipeline.data.schema",
        "from galaxy_pipeline.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from galaxy_pipeline.cli import main\ntry:\n    main(['evaluate', '--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["hsc", "package-root", "schema", "cli-help", "cli-evaluate-help"],
)
def test_light_entry_points_import_no_torch(code):
    check = f"{code}\nimport sys\nprint([name for name in ('torch', 'diffusers') if name in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", check], env=_subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_package_root_still_gives_the_pipeline_on_demand():
    code = (
        "import sys, galaxy_pipeline\nassert 'torch' not in sys.modules\n"
        "pipeline = galaxy_pipeline.GalaxyRedshiftPipeline\nassert 'torch' in sys.modules\n"
        "from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline\nassert pipeline is GalaxyRedshiftPipeline\n"
        "print(galaxy_pipeline.__version__)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    from galaxy_pipeline.version import __version__

    assert result.stdout.strip() == __version__
