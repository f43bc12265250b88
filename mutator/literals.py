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
