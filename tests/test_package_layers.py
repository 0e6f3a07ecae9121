"""The package's layers: each module imports only its own layer and the ones below it.

core (layers, losses, settings) -> model tools (conversion, tracing, pruning, metrics, export,
the training recipe) -> builders (`keras_topo.applications`) -> the package root (the public
API) -> experiments (data, runner, studies, figures) -> entry points (CLI, demo, doctor).
Read from the source with `ast` (nothing is imported, no backend involved), plus one
subprocess for the names the docs give. `import keras_topo` leaving `os.environ` as it was is
checked in tests/test_fast_path.py (`test_import_leaves_the_environment_as_it_was`).
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each package's files are (pyproject's `package-dir`: the builders live in applications/).
SOURCE_ROOTS = {"keras_topo": ROOT / "keras_topo", "keras_topo.applications": ROOT / "applications"}

# Lowest first; a module belongs to the layer of its longest matching name (a package name
# covers its submodules; the root "keras_topo" is its `__init__` alone).
LAYERS = (
    (
        "core",
        (
            "keras_topo.channel_scale",
            "keras_topo.cpu_channels_first",
            "keras_topo.fast_layers",
            "keras_topo.loss_recording",
            "keras_topo.objectives",
            "keras_topo.positions",
            "keras_topo.tensor_constants",
            "keras_topo.token_topography",
            "keras_topo.topographic_conv",
            "keras_topo.topographic_loss",
            "keras_topo.topographic_regularizer",
            "keras_topo.topography",
        ),
    ),
    (
        "model tools",
        (
            "keras_topo.call_graph",
            "keras_topo.conversion",
            "keras_topo.distribute",
            "keras_topo.export",
            "keras_topo.layer_copy",
            "keras_topo.layer_saving",
            "keras_topo.layer_selection",
            "keras_topo.metrics",
            "keras_topo.model_copy",
            "keras_topo.pruning",
            "keras_topo.topographic_loss_logger",
            "keras_topo.tracing",
            "keras_topo.training_recipe",
        ),
    ),
    ("builders", ("keras_topo.applications",)),
    ("package root", ("keras_topo",)),
    ("experiments", ("keras_topo.data", "keras_topo.experiments", "keras_topo.figures")),
    ("entry points", ("keras_topo.cli", "keras_topo.demo", "keras_topo.doctor")),
)

# Imports of the package's own modules inside a function, each for an optional dependency:
# (importing module, imported module) -> why it waits until it is needed.
LAZY_IMPORTS = {
    ("keras_topo.experiments.datasets", "keras_topo.data"): "tf.data pipelines (TensorFlow)",
    ("keras_topo.experiments.prune_sweep", "keras_topo.data"): "tf.data pipelines (TensorFlow)",
    ("keras_topo.experiments.study_report", "keras_topo.figures.pruning_curve"): "matplotlib",
    ("keras_topo.demo", "keras_topo.figures"): "matplotlib",
    ("keras_topo.cli", "keras_topo.figures"): "matplotlib",
}


def _module_files():
    """`{module name: (path, is_package)}` of every source file of the package."""
    found = {}
    for package, folder in SOURCE_ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([package, *(parts[:-1] if is_package else parts)])
            found[name] = (path, is_package)
    return found


MODULES = _module_files()


def _imports(name):
    """`[(imported module, at module level)]` of the package's own modules that `name`
    imports (`from pkg import submodule` counts as the submodule)."""
    path, is_package = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    nested = {
        id(node)
        for scope in ast.walk(tree)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for node in ast.walk(scope)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        found += [
            (target, id(node) not in nested)
            for target in targets
            if target == "keras_topo" or target.startswith("keras_topo.")
        ]
    return found


def _layer(name):
    """Index in `LAYERS` of module `name`'s layer, or None where it is in none."""
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or (prefix != "keras_topo" and name.startswith(prefix + "."))
    ]
    return max(matches)[1] if matches else None


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in MODULES if _layer(name) is None)
    assert not unplaced, f"Add these modules to a layer of LAYERS: {unplaced}"


def test_no_module_imports_from_a_higher_layer():
    upward = [
        f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for name in MODULES
        for target, _ in _imports(name)
        if _layer(target) > _layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_own_modules_are_imported_at_module_level_except_for_optional_dependencies():
    lazy = {(name, target) for name in MODULES for target, top in _imports(name) if not top}
    unexplained = sorted(lazy - set(LAZY_IMPORTS))
    assert not unexplained, (
        f"Function-level imports of the package's modules {unexplained}: move them to the "
        "top (restructure a cycle away), or list them in LAZY_IMPORTS with the optional "
        "dependency they wait for."
    )
    assert not set(LAZY_IMPORTS) - lazy, f"stale LAZY_IMPORTS: {set(LAZY_IMPORTS) - lazy}"


def _edges(name):
    """The modules that importing `name`'s body runs: its imports, plus each imported
    module's packages that do not contain `name` (their `__init__` runs first; the root's
    is left out: it runs before any module)."""
    edges = set()
    for target, _ in _imports(name):
        edges.add(target)
        parts = target.split(".")
        for end in range(2, len(parts)):
            package = ".".join(parts[:end])
            if not (name == package or name.startswith(package + ".")):
                edges.add(package)
    edges.discard(name)
    return edges


def test_no_import_cycle_between_files():
    graph = {name: _edges(name) - {"keras_topo"} for name in MODULES}
    state, stack, cycles = {}, [], []

    def visit(name):  # depth first; a grey module met again closes a cycle
        state[name] = "grey"
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "grey":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = "black"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_an_upward_and_a_function_level_import(tmp_path, monkeypatch):
    """The walk itself: a core module importing the CLI inside a function is found by both."""
    path = tmp_path / "positions.py"
    path.write_text("def f():\n    from keras_topo import cli\n")
    monkeypatch.setitem(MODULES, "keras_topo.positions", (path, False))
    assert _imports("keras_topo.positions") == [("keras_topo.cli", False)]
    assert _layer("keras_topo.cli") > _layer("keras_topo.positions")
    path.write_text("from . import topography\nfrom .objectives import weight_smoothness\n")
    assert _imports("keras_topo.positions") == [
        ("keras_topo.topography", True),
        ("keras_topo.objectives.weight_smoothness", True),
    ]


def _documented_names():
    """Every dotted `keras_topo.x.y` the README and the docs pages name."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    return sorted(set(re.findall(r"\bkeras_topo(?:\.\w+)+", text)))


_RESOLVE = """
import functools, json, sys
import keras_topo
missing = []
for name in json.loads(sys.argv[1]):
    try:
        functools.reduce(getattr, name.split(".")[1:], keras_topo)
    except AttributeError as error:
        missing.append(f"{name}: {error}")
print(json.dumps(missing))
"""


@pytest.mark.tf_only  # one fresh process, started once (in the TensorFlow pass)
def test_names_in_the_docs_are_attributes_after_import_keras_topo():
    names = _documented_names()
    prefixes = {".".join(name.split(".")[:end]) for name in names for end in range(2, 5)}
    submodules = prefixes & set(MODULES)
    assert {"keras_topo.metrics", "keras_topo.experiments.run_config"} <= submodules
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE, json.dumps(names)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_old_recipe_module_is_a_deprecated_alias():
    from keras_topo import training_recipe
    from keras_topo.experiments import recipe

    with pytest.warns(DeprecationWarning, match="keras_topo.training_recipe.TorchSGD"):
        assert recipe.TorchSGD is training_recipe.TorchSGD
    with pytest.warns(DeprecationWarning):
        assert recipe.EPOCHS is training_recipe.EPOCHS
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        recipe.nope  # noqa: B018


def test_a_keras_file_saved_under_the_old_recipe_module_loads(tmp_path):
    """`.keras` files written before the move name `keras_topo.experiments.recipe` as the
    optimizer's module; `TorchSGD`'s registered name `keras_topo>TorchSGD` is unchanged."""
    import zipfile

    import keras
    import numpy as np

    from keras_topo import training_recipe

    assert keras.saving.get_registered_name(training_recipe.TorchSGD) == "keras_topo>TorchSGD"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=training_recipe.make_optimizer(2, 1, weight_decay=0.02), loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), batch_size=2, verbose=0)
    saved = tmp_path / "new.keras"
    model.save(saved)
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                optimizer = config["compile_config"]["optimizer"]
                assert optimizer["module"] == "keras_topo.training_recipe"
                optimizer["module"] = "keras_topo.experiments.recipe"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    loaded = keras.saving.load_model(old)
    assert isinstance(loaded.optimizer, training_recipe.TorchSGD)
    assert loaded.optimizer.coupled_weight_decay == 0.02
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    np.testing.assert_allclose(
        loaded.predict(np.ones((1, 3)), verbose=0),
        model.predict(np.ones((1, 3)), verbose=0),
        rtol=1e-6,
    )
