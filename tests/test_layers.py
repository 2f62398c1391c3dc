"""The package's layers import one way: cli -> runs -> methods -> engine -> stats/radius.

Imports inside functions count as much as module-level ones. A cycle, an import of a higher
layer, or click outside the CLI fails here.
"""
import ast
from pathlib import Path

import robustcert

PACKAGE = Path(robustcert.__file__).resolve().parent

# Lower number = lower layer. A module may import its own layer or lower ones only.
LAYERS = [
    ("robustcert.errors", "robustcert.version", "robustcert.certificate"),
    ("robustcert.stats", "robustcert.radius", "robustcert.files", "robustcert.results", "robustcert.plotting",
     "robustcert.splits", "robustcert.losses", "robustcert.augment"),
    ("robustcert.engine", "robustcert.simplex"),
    ("robustcert.models", "robustcert.data"),
    ("robustcert.methods", "robustcert.rl"),
    ("robustcert.runs",),
    ("robustcert.cli", "robustcert.__main__", "robustcert"),
]


def module_name(path: Path) -> str:
    parts = ("robustcert",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> robustcert modules it imports anywhere in its body (relative imports resolved)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                stem = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module or ""
                candidates = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                # a package's __init__ re-exporting its submodules is their face, not a dependency of them
                if candidate and candidate != name and not name.startswith(candidate + "."):
                    targets.add(candidate)
        graph[name] = targets
    return graph


def layer_of(module: str) -> int:
    best = None
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def find_cycle(graph):
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for target in sorted(graph[node]):
            if colour.get(target) == "grey":
                return stack[stack.index(target):] + [target]
            if target not in colour:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(graph):
        if node not in colour:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_among_robustcert_modules():
    graph = import_graph()
    assert len(graph) > 30
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_check_finds_a_function_level_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_a_higher_layer():
    wrong = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
             if layer_of(target) > layer_of(module)]
    assert not wrong, wrong


def test_click_only_in_the_cli():
    users = [module_name(p) for p in PACKAGE.rglob("*.py") if any(
        isinstance(node, (ast.Import, ast.ImportFrom)) and (
            any(a.name.split(".")[0] == "click" for a in node.names) if isinstance(node, ast.Import)
            else (node.module or "").split(".")[0] == "click")
        for node in ast.walk(ast.parse(p.read_text())))]
    assert users == ["robustcert.cli"]


def test_public_api_is_one_all_list_of_existing_names():
    assert len(robustcert.__all__) == len(set(robustcert.__all__))
    for name in robustcert.__all__:
        assert hasattr(robustcert, name), name
    for name in ("Smooth", "certify_dataset", "predict_dataset", "load_model", "load_dataset", "RobustCertError"):
        assert name in robustcert.__all__


def functions_moving_a_file_over_its_target(package: Path) -> set[str]:
    """Functions that call os.replace/os.rename or a one-argument .replace/.rename (Path's)."""
    found = set()
    for path in sorted(package.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("replace", "rename") and not node.keywords
                        and ((isinstance(node.func.value, ast.Name) and node.func.value.id == "os")
                             or len(node.args) == 1)):
                    found.add(f"{path.relative_to(package).as_posix()}:{function.name}")
    return found


def test_one_function_moves_a_file_over_its_target():
    # the temporary-file-and-rename promise has one implementation; others write through it
    assert functions_moving_a_file_over_its_target(PACKAGE) == {"files.py:atomic_write"}


def test_the_atomic_write_check_finds_a_second_implementation(tmp_path):
    (tmp_path / "saver.py").write_text("import os\n\ndef save(tmp, path):\n    os.replace(tmp, path)\n")
    assert functions_moving_a_file_over_its_target(tmp_path) == {"saver.py:save"}
