"""The house: funcdl's modules import one way (no circles), and `autodiff` does not import `ops`.

The imports are read from the source with `ast` (every `import` and `from ... import`, those
inside functions included, relative ones resolved), not by importing anything: a circle that
only closes at call time is still a circle in the layering. Layers, bottom up: `autodiff` and
`ops` (`ops` uses `autodiff`, never the reverse); `nn`, `losses` on `ops`; `optim`, `metrics`
on jax alone; `checkpoint`, `datasets` leaves; `train` on all of these; `examples` and `cli`
on top (`cli` uses `examples`, never the reverse). The Tensor methods that are `fdl.ops`
functions are attached from above by `funcdl.tensor_methods`.
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "funcdl"


def module_files(package=PACKAGE):
    """{dotted module name: path} for every .py file under `package` (a package by its name)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name, path, modules):
    """The modules of `modules` that module `name` (file `path`) imports, anywhere in its code.

    `from a.b import c` counts as importing `a.b`, and `a.b.c` too when that is a module.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package that holds this module
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def import_graph(package=PACKAGE):
    """{module: the modules it imports}, without the edges from a module to the packages that
    contain it (importing `funcdl.nn.layers` runs `funcdl/nn/__init__.py` and `funcdl/__init__.py`
    by Python's rules, and those re-export their children: that is no circle of the layering)."""
    modules = module_files(package)
    return {name: {other for other in imported_modules(name, path, modules)
                   if not name.startswith(other + ".")}
            for name, path in modules.items()}


def circles(graph):
    """The strongly connected components with more than one module (Tarjan), each a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    """A known little package: top-level, function-level, relative and `from pkg import module`
    imports, an import of the containing package, and one circle that closes at call time."""
    package = tmp_path / "funcdl"
    (package / "sub").mkdir(parents=True)
    files = {"__init__.py": "from funcdl import a\n",
             "a.py": "import jax\n\ndef late():\n    from funcdl.sub import b  # at call time\n",
             "sub/__init__.py": "from . import b\n",
             "sub/b.py": "from .. import c\nimport funcdl.a\nfrom funcdl import sub\n",
             "c.py": "import os\n"}
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph == {"funcdl": {"funcdl.a"}, "funcdl.a": {"funcdl.sub", "funcdl.sub.b"},
                     "funcdl.sub": {"funcdl.sub.b"}, "funcdl.sub.b": {"funcdl.c", "funcdl.a"},
                     "funcdl.c": set()}
    assert circles(graph) == [["funcdl.a", "funcdl.sub", "funcdl.sub.b"]]


def test_no_import_circle():
    found = circles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(circle) for circle in found)


def test_examples_never_import_the_command_line():
    graph = import_graph()
    command = {"funcdl.cli", "funcdl.example_commands", "funcdl.__main__"}
    assert "funcdl.example_commands" in graph["funcdl.cli"]  # the command sits on the examples
    assert "funcdl.examples" in graph["funcdl.example_commands"]
    upward = {name: sorted(imports & command)
              for name, imports in graph.items() if name.startswith("funcdl.examples")}
    assert all(not imports for imports in upward.values()), upward


def test_autodiff_does_not_import_ops():
    graph = import_graph()
    upward = {name: sorted(m for m in imports if m == "funcdl.ops" or m.startswith("funcdl.ops_"))
              for name, imports in graph.items()
              if name == "funcdl.autodiff" or name.startswith("funcdl.autodiff.")}
    assert all(not imports for imports in upward.values()), upward


def test_the_tensor_methods_come_from_above_ops():
    graph = import_graph()
    assert {"funcdl.ops", "funcdl.autodiff"} <= graph["funcdl.tensor_methods"]
    assert "funcdl.tensor_methods" in graph["funcdl"]
    users = {name for name, imports in graph.items() if "funcdl.tensor_methods" in imports}
    assert users == {"funcdl"}, users  # attached once, by the package
