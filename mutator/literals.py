"""Find and rewrite the integer literals of a Python source file with libcst.

    mod = parse(source)                        # SourceError on a syntax error
    lits = find_integers(mod)                  # every int literal, document order, with positions
    new_source = rewrite(mod, {3: 96, 7: 96})  # literal #3 and #7 set to 96, nothing else touched

Literals are addressed by their index in document order, which is stable for a given source. The
rewrite goes through the syntax tree, so comments, formatting and all other code stay as written.
"""
from __future__ import annotations

from dataclasses import dataclass

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider


class SourceError(ValueError):
    """The source is not valid Python."""


@dataclass(frozen=True)
class IntLiteral:
    index: int
    value: int
    line: int
    col: int
    text: str  # the literal as written, e.g. "0x40" or "1_024"


def parse(source: str) -> cst.Module:
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise SourceError(f"syntax error at line {exc.raw_line}, column {exc.raw_column}") from None
    except Exception as exc:  # libcst raises a few other types on odd inputs (e.g. null bytes)
        raise SourceError(f"cannot parse: {exc}") from None


def _int_value(node: cst.Integer) -> int | None:
    try:
        return int(node.value.replace("_", ""), 0)
    except ValueError:
        return None


class _IntegerFinder(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self):
        self.found: list[IntLiteral] = []

    def visit_Integer(self, node: cst.Integer) -> None:
        value = _int_value(node)
        pos = self.get_metadata(PositionProvider, node).start
        self.found.append(IntLiteral(len(self.found), -1 if value is None else value,
                                     pos.line, pos.column, node.value))


def find_integers(module: cst.Module) -> list[IntLiteral]:
    finder = _IntegerFinder()
    MetadataWrapper(module, unsafe_skip_copy=True).visit(finder)
    return finder.found


class SetIntegers(cst.CSTTransformer):
    """Set chosen integer literals (by document-order index) to new values."""

    DESCRIPTION = "Replace the integer literals at the given indices with new values."

    def __init__(self, values: dict[int, int]):
        super().__init__()
        self.values = values
        self.seen = 0

    def leave_Integer(self, original_node: cst.Integer, updated_node: cst.Integer) -> cst.Integer:
        i = self.seen
        self.seen += 1
        if i in self.values:
            return updated_node.with_changes(value=str(int(self.values[i])))
        return updated_node


def rewrite(module: cst.Module | str, values: dict[int, int]) -> str:
    """The source with the chosen literals replaced, through the syntax tree (reference path)."""
    if isinstance(module, str):
        module = parse(module)
    if not values:
        return module.code
    return module.visit(SetIntegers({int(k): v for k, v in values.items()})).code


class Rewriter:
    """`rewrite` for many edits of one source: the same output, without re-walking the tree.

    The positions of the literals come from libcst's PositionProvider once; each rewrite then only
    replaces those token spans (tests check it against `rewrite` for every literal).
    """

    def __init__(self, source: str):
        self.module = parse(source)
        self.source = self.module.code
        self.literals = find_integers(self.module)
        starts = [0]
        for line in self.source.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        self._spans = []
        for lit in self.literals:
            begin = starts[lit.line - 1] + lit.col
            end = begin + len(lit.text)
            if self.source[begin:end] != lit.text:  # unusual column counting: use the tree walk
                self._spans = None
                break
            self._spans.append((begin, end))

    def __call__(self, values: dict[int, int]) -> str:
        if self._spans is None:
            return rewrite(self.module, values)
        out, last = [], 0
        for i in sorted(int(k) for k in values):
            begin, end = self._spans[i]
            out += [self.source[last:begin], str(int(values[i]))]
            last = end
        out.append(self.source[last:])
        return "".join(out)


# -- rounding divisors ----------------------------------------------------------------------------

def _name(node) -> str | None:
    return node.value if isinstance(node, cst.Name) else None


class _DivisorUses(cst.CSTVisitor):
    """Per function (module-level or method; a class name stands for its `__init__`): its parameters,
    the names it divides by (`x // d`, `x % d`), the calls it makes, and every integer literal
    that is itself a right operand of `//` or `%`."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self):
        self.funcs: dict[str, dict] = {}  # key: function name, or "Class" for Class.__init__
        self.stack: list[dict] = [{"params": [], "defaults": {}, "divides": set(), "calls": []}]
        self.classes: list[str] = []
        self.direct: set[tuple[int, int]] = set()

    def _pos(self, node) -> tuple[int, int]:
        p = self.get_metadata(PositionProvider, node).start
        return p.line, p.column

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(node.name.value)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        ps = [*node.params.posonly_params, *node.params.params, *node.params.kwonly_params]
        method = bool(self.classes) and bool(ps)
        f = {"params": [p.name.value for p in ps][1 if method else 0:], "divides": set(), "calls": [],
             "defaults": {p.name.value: self._pos(p.default) for p in ps if isinstance(p.default, cst.Integer)}}
        name = node.name.value
        self.funcs[self.classes[-1] if method and name == "__init__" else name] = f
        self.stack.append(f)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.stack.pop()

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, (cst.FloorDivide, cst.Modulo)):
            if _name(node.right):
                self.stack[-1]["divides"].add(node.right.value)
            elif isinstance(node.right, cst.Integer):
                self.direct.add(self._pos(node.right))

    def visit_Call(self, node: cst.Call) -> None:
        callee = _name(node.func) or (node.func.attr.value if isinstance(node.func, cst.Attribute) else None)
        if callee:
            args = [(a.keyword.value if a.keyword else i, a.value) for i, a in enumerate(node.args) if not a.star]
            self.stack[-1]["calls"].append((callee, [(k, v, self._pos(v)) for k, v in args]))


def rounding_divisors(module: cst.Module) -> set[tuple[int, int]]:
    """(line, column) of the integer literals that are rounding divisors, not widths: a literal
    divided by (`c // 8 * 8`), or one that reaches a division as a parameter: `round_nearest=8`
    passed on to `_make_divisible(v, divisor)`'s `int(v + divisor / 2) // divisor * divisor`, as a
    default, a keyword or a positional argument of a function or class defined in the file (followed
    through any number of calls). Changing such a literal moves layer widths by rounding only, so the
    width analysis must not offer it as a width."""
    uses = _DivisorUses()
    MetadataWrapper(module, unsafe_skip_copy=True).visit(uses)
    funcs = uses.funcs
    divisor = {name: {p for p in f["params"] if p in f["divides"]} for name, f in funcs.items()}

    def slot(callee, key):
        """The callee's parameter a call argument binds to (a keyword, or a position)."""
        params = funcs[callee]["params"]
        return key if isinstance(key, str) else params[key] if key < len(params) else None

    changed = True
    while changed:  # a parameter handed on to a divisor parameter is one too
        changed = False
        for name, f in funcs.items():
            for callee, args in f["calls"]:
                if callee not in funcs:
                    continue
                for key, value, _ in args:
                    p = _name(value)
                    if p in f["params"] and p not in divisor[name] and slot(callee, key) in divisor[callee]:
                        divisor[name].add(p)
                        changed = True
    found = set(uses.direct)
    for name, f in funcs.items():
        found |= {pos for p, pos in f["defaults"].items() if p in divisor[name]}
    for f in [*funcs.values(), uses.stack[0]]:
        for callee, args in f["calls"]:
            if callee in funcs:
                found |= {pos for key, value, pos in args
                          if isinstance(value, cst.Integer) and slot(callee, key) in divisor[callee]}
    return found
