"""The layers import downwards only, and no module imports itself back through another: nn knows nothing of
attention sampling, the method knows nothing of files and flags, the application nothing of the experiments."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("nn", "attention_sampling", "attention_sampling/application", "experiments")
PACKAGES_DOTTED = tuple(package.replace("/", ".") for package in PACKAGES)


def project_modules():
    """-> {dotted module name: path} of every module in PACKAGES."""
    modules = {}
    for package in PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if name.endswith(".py"):
                dotted = package.replace("/", ".") + ("" if name == "__init__.py" else "." + name[:-3])
                modules[dotted] = os.path.join(ROOT, package, name)
    return modules


def imports(modules):
    """-> {module: set of project modules it imports}, at the top level or inside functions alike."""
    graph = {}
    for module, path in modules.items():
        with open(path) as handle:
            tree = ast.parse(handle.read())
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {name for name in found if name in modules and name != module}
    return graph


def cycles(graph):
    """-> the strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    # A package's __init__ re-exports its modules, which import siblings through the package: leave it out.
    graph = imports(project_modules())
    graph = {module: {other for other in targets if other not in PACKAGES_DOTTED} for module, targets in graph.items()
             if module not in PACKAGES_DOTTED}
    assert cycles(graph) == []


def test_each_layer_imports_only_the_layers_below_it():
    graph = imports(project_modules())
    below = {"nn": ("nn",), "attention_sampling": ("nn", "attention_sampling"),
             "attention_sampling.application": ("nn", "attention_sampling", "attention_sampling.application"),
             "experiments": PACKAGES_DOTTED}
    for module, targets in graph.items():
        layer = max((p for p in PACKAGES_DOTTED if module == p or module.startswith(p + ".")), key=len)
        for target in targets:
            target_layer = max((p for p in PACKAGES_DOTTED if target == p or target.startswith(p + ".")), key=len)
            assert target_layer in below[layer], f"{module} imports {target}"
