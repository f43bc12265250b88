"""The layers: mutator < corpus < finetune < search. A module may use its own package and those to its left,
never one to its right, and no modules form a cycle. Found by reading every module's syntax tree: `import`
and `from` statements at any depth (inside functions too) and string constants that name a module
("corpus.pipeline", "corpus.pipeline:evaluate", "corpus." as a prefix), as the sandbox's handler names do."""
import ast
import re
from collections import defaultdict

from conftest import ROOT

LAYERS = ("mutator", "corpus", "finetune", "search")
NAMED = re.compile(r"(%s)((\.[A-Za-z_]\w*)*)\.?(:[A-Za-z_]\w*)?" % "|".join(LAYERS))


def modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def _known(name: str, mods) -> str | None:
    """The longest prefix of a dotted name that is a module of the packages ("corpus.pipeline.ROW_KEYS")."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in mods:
            return ".".join(parts[:n])
    return None


def edges(mods) -> dict[str, dict[str, str]]:
    """module -> {module it names: where and how (the first occurrence)}."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for mod, tree in mods.items():
        package = mod if (ROOT / mod.replace(".", "/") / "__init__.py").exists() else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [(a.name, "import") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
                names = [(f"{base}.{a.name}", "from-import") for a in node.names]  # a name, else its module
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and NAMED.fullmatch(node.value):
                names = [(node.value.split(":")[0].rstrip("."), f"string {node.value!r}")]
            for name, how in names:
                target = _known(name, mods)
                if target and target != mod:
                    out[mod].setdefault(target, f"line {node.lineno}: {how}")
    return out


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, without recursion)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def _layer(mod: str) -> int:
    return LAYERS.index(mod.split(".")[0])


def test_the_scan_sees_imports_in_functions_and_handler_strings():
    found = edges({"mutator.a": ast.parse("def f():\n    from corpus.b import g\n"), "corpus": ast.parse(""),
                   "corpus.b": ast.parse("H = 'mutator.a:run'\nP = ('corpus.',)\nD = 'see corpus.b'\n")})
    assert set(found["mutator.a"]) == {"corpus.b"}
    assert set(found["corpus.b"]) == {"mutator.a", "corpus"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_names_a_layer_above_it():
    graph = edges(modules())
    up = [f"{a} -> {b} ({how})" for a in sorted(graph) for b, how in sorted(graph[a].items()) if _layer(b) > _layer(a)]
    assert not up, f"{len(up)} upward edges ({' < '.join(LAYERS)}):\n" + "\n".join(up)


def test_no_import_cycles():
    graph = edges(modules())
    found = cycles({a: set(b) for a, b in graph.items()})
    lines = [f"{a} -> {b} ({graph[a][b]})" for comp in found for a in comp for b in sorted(graph[a]) if b in comp]
    assert not found, f"{len(found)} cycles {found}:\n" + "\n".join(lines)


def test_every_name_imported_from_the_packages_exists():
    """A `from <package module> import name` anywhere (inside functions too, benchmarks and tests included)
    names something that module has: a function-level import of a moved name fails only when its line
    runs (benchmarks/finetune_throughput.py imported `load_pairs` from finetune.train after it had moved)."""
    import importlib

    files = [p for d in (*LAYERS, "benchmarks", "tests") for p in sorted((ROOT / d).rglob("*.py"))]
    missing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module and \
                    node.module.split(".")[0] in LAYERS:
                mod = importlib.import_module(node.module)
                for a in node.names:
                    if a.name != "*" and not hasattr(mod, a.name) and \
                            importlib.util.find_spec(f"{node.module}.{a.name}") is None:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}")
    assert not missing, missing
