"""The package's shape: no import cycle between its modules, and one module that maps model names."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dnp_batch"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """{module: the package's modules it imports}, every import statement counted, including those
    inside functions (an import deferred to first use is still a dependency of the module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:  # `from . import tiny` names a module, `from .x import f` a name in x
                    deps.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_reading_a_config_or_a_sweep_loads_no_torch_diffusers_or_ray():
    """The config, the method and scorer registries and the sweep reader import none of the heavy
    libraries (they load where a model runs), so --help and bad-input errors answer at once."""
    code = ("import sys; from dnp_batch.sweep import load_sweep; from dnp_batch.config import load_config; "
            "import dnp_batch.scorers, dnp_batch.methods; load_config(); load_sweep('configs/sweeps/answer-paper.yaml'); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'open_clip', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_the_core_imports_nothing_from_the_toy_world():
    """The toy world plugs in through the registries (dnp_batch/toyworld/plugin.py, found by its entry
    point): no module outside dnp_batch.toyworld imports it, deferred imports included."""
    graph = imports()
    leaks = {m: sorted(d for d in deps if d.startswith("dnp_batch.toyworld")) for m, deps in graph.items()
             if not m.startswith("dnp_batch.toyworld")}
    assert {m: d for m, d in leaks.items() if d} == {}
    from dnp_batch import plugins

    assert [p.name for p in plugins.installed()] == ["toyworld"]  # pip install -e . registered it


def test_the_walk_sees_the_imports():
    graph = imports()
    assert {"dnp_batch.guidance", "dnp_batch.sampler", "dnp_batch.methods.base"} <= graph["dnp_batch.methods.answer"]
    assert "dnp_batch.tiny" in graph["dnp_batch.names"]  # a deferred import counts
    assert "dnp_batch.stages.base" in graph["dnp_batch.stages.score"]


def test_no_import_cycle_in_the_package():
    graphlib.TopologicalSorter(imports()).static_order()  # raises CycleError naming the cycle


def test_only_the_name_registry_imports_the_tiny_twins():
    importers = sorted(m for m, deps in imports().items() if "dnp_batch.tiny" in deps)
    assert importers == ["dnp_batch.names"], importers


def test_no_two_classes_of_the_package_share_a_name():
    seen: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(module_name(path))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
