"""The JSON Schema compiled once into a plain predicate: valid or not, nothing else.

jsonschema's validator costs about half a millisecond per document on our schema (it walks
the schema, evolves a validator per subschema and resolves references on every call). Most
documents are valid, so validation asks this predicate first and calls jsonschema only for
documents it rejects, to get the errors and their paths: every message still comes from
jsonschema, and a document it accepts is one jsonschema accepts too
(``tests/test_fastschema.py`` checks both on every example and on mutations of a varied
corpus).

The schema is compiled into Python source (one function per subschema), as fastjsonschema
does for older drafts. The package ships its own schema compiled, as a module
(``_schema_check.py``, written by ``python -m reconciler.fastschema``), so a run imports
Python's cached bytecode instead of compiling the source; a schema of another digest is
compiled once per process. Only the Draft 2020-12 keywords our schema uses are compiled; a
schema with any other keyword compiles to ``None`` and jsonschema checks every document, as
before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$schema", "$id", "x-message",
                "x-rule", "deprecated", "readOnly", "writeOnly"}
_SUPPORTED = _ANNOTATIONS | {
    "type", "properties", "required", "additionalProperties", "allOf", "if", "then", "else", "const",
    "enum", "pattern", "minLength", "maxLength", "minProperties", "maxProperties", "$ref", "$defs",
    "items", "uniqueItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
}


class Unsupported(Exception):
    pass


_MISSING = object()  # a property the instance does not have


def _equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema sees it: booleans are not numbers, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_equal(a[k], b[k]) for k in a))
    if isinstance(a, list) or isinstance(b, list):
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(_equal(x, y) for x, y in zip(a, b, strict=True)))
    if a is None or b is None:
        return a is None and b is None
    return bool(a == b)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_integer(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _unique(v: list[Any]) -> bool:
    return all(not _equal(v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v)))


_TYPE_TESTS = {
    "object": "isinstance({x}, dict)",
    "array": "isinstance({x}, list)",
    "string": "isinstance({x}, str)",
    "boolean": "({x} is True or {x} is False)",
    "null": "{x} is None",
    "number": "_number({x})",
    "integer": "_is_integer({x})",
}


_CONDITIONAL = {"if", "then", "else"}
_OBJECT_TESTS = {"required", "properties"}
_SIMPLE = _ANNOTATIONS | {"type", "const", "enum", "pattern", "minLength", "maxLength", "minimum", "maximum",
                         "exclusiveMinimum", "exclusiveMaximum", "$ref"}


class _Compiler:
    """Writes one Python function per subschema (plain ifs, early ``return False``) and
    compiles them once: no per-call schema walk, no closures, no generators. A subschema of
    scalar checks only (type, const, enum, pattern, lengths, bounds) becomes an expression,
    written inline where it is used (a property's value is read once, with ``dict.get``), and
    a subschema that only refers to another is that other's function: most of a document is
    checked without a call."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.lines: list[str] = []
        self.consts: list[Any] = []
        self.done: dict[int, str] = {}  # id(subschema) -> function name
        self.keep: list[Any] = []  # keeps the ids above alive
        self.names = 0  # fresh names for the values inline expressions read (t1, t2, ...)

    def const(self, value: Any) -> str:
        self.consts.append(value)
        return f"C[{len(self.consts) - 1}]"

    def resolve(self, target: str) -> Any:
        if not target.startswith("#/"):
            raise Unsupported(target)
        node: Any = self.root
        for part in target[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise Unsupported(target)
            node = node[part]
        return node

    def _scalar_tests(self, s: Mapping[str, Any], x: str) -> list[str]:
        """The tests of a subschema's scalar keywords on the variable ``x``, each an expression
        that is true when ``x`` passes."""
        tests: list[str] = []
        names: list[str] = []
        if "type" in s:
            names = [s["type"]] if isinstance(s["type"], str) else list(s["type"])
            tests.append("(" + " or ".join(_TYPE_TESTS[n].format(x=x) for n in names) + ")")
        if "const" in s:
            c = s["const"]
            if isinstance(c, str):
                tests.append(f"(isinstance({x}, str) and {x} == {self.const(c)})")
            elif c is None or isinstance(c, bool):
                tests.append(f"{x} is {c!r}")
            else:
                tests.append(f"_equal({x}, {self.const(c)})")
        if "enum" in s:
            options = list(s["enum"])
            if all(isinstance(o, str) for o in options):
                tests.append(f"(isinstance({x}, str) and {x} in {self.const(frozenset(options))})")
            else:
                tests.append(f"any(_equal({x}, o) for o in {self.const(options)})")
        strings = []
        if "pattern" in s:
            strings.append(f"{self.const(re.compile(s['pattern']).search)}({x}) is not None")
        if "minLength" in s:
            strings.append(f"len({x}) >= {int(s['minLength'])}")
        if "maxLength" in s:
            strings.append(f"len({x}) <= {int(s['maxLength'])}")
        if strings:
            body = " and ".join(strings)
            tests.append(f"({body})" if names == ["string"] else f"(not isinstance({x}, str) or ({body}))")
        numbers = []
        for word, op in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")):
            if word in s:
                numbers.append(f"{x} {op} {self.const(s[word])}")
        if numbers:
            tests.append(f"(not _number({x}) or ({' and '.join(numbers)}))")
        return tests

    def fresh(self) -> str:
        self.names += 1
        return f"t{self.names}"

    def expr(self, schema: Any, x: str) -> str | None:
        """An expression true when ``x`` is valid, for a subschema of scalar checks only (and
        ``$ref`` to one), for a small object test (``required`` and ``properties`` of such
        subschemas: the ``if`` of a discriminator), and for an ``if``/``then``/``else`` alone;
        None for any other."""
        if schema is True or schema is False:
            return str(schema)
        if not isinstance(schema, dict):
            return None
        keys = set(schema) - _ANNOTATIONS
        if keys and keys <= _CONDITIONAL:
            if "if" not in schema:
                return "True"  # then and else without an if have no effect
            cond = self.call(schema["if"], x)
            then = self.call(schema["then"], x) if "then" in schema else "True"
            other = self.call(schema["else"], x) if "else" in schema else "True"
            return f"(({then}) if ({cond}) else ({other}))"
        if keys & _OBJECT_TESTS and keys <= _OBJECT_TESTS | {"type"}:
            return self._object_expr(schema, x)
        if keys - _SIMPLE:
            return None
        tests = self._scalar_tests(schema, x)
        if "$ref" in schema:
            inner = self.expr(self.resolve(schema["$ref"]), x)
            if inner is None:
                return None
            tests.append(inner)
        return " and ".join(tests) if tests else "True"

    def _object_expr(self, s: Mapping[str, Any], x: str) -> str | None:
        """``required`` and ``properties`` (each property's subschema an expression too) as one
        expression; each property is read once, into a name of its own (``:=``)."""
        tests = [f"{k!r} in {x}" for k in s.get("required", [])]
        for k, sub in s.get("properties", {}).items():
            t = self.fresh()
            inner = self.expr(sub, t)
            if inner is None:
                return None
            tests.append(f"(({t} := {x}.get({k!r}, _MISSING)) is _MISSING or ({inner}))")
        body = " and ".join(tests) or "True"
        if "type" in s:
            if s["type"] != "object":
                return None
            return f"(isinstance({x}, dict) and {body})"
        return f"(not isinstance({x}, dict) or ({body}))"

    def call(self, schema: Any, x: str) -> str:
        """An expression true when ``x`` is valid against ``schema``: inline, or a call."""
        inline = self.expr(schema, x)
        return f"({inline})" if inline is not None else f"{self.function(schema)}({x})"

    def function(self, schema: Any) -> str:
        if id(schema) in self.done:
            return self.done[id(schema)]
        if isinstance(schema, dict) and set(schema) - _ANNOTATIONS == {"$ref"}:
            name = self.function(self.resolve(schema["$ref"]))  # a plain reference: its target
            self.done[id(schema)] = name
            self.keep.append(schema)
            return name
        name = f"f{len(self.done)}"
        self.done[id(schema)] = name
        self.keep.append(schema)
        if schema is True or schema is False:
            self.lines += [f"def {name}(v):", f"    return {schema}", ""]
            return name
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        unknown = set(schema) - _SUPPORTED
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        s = schema
        body = [f"if not ({t}): return False" for t in self._scalar_tests(s, "v")]
        objects = []
        if "minProperties" in s:
            objects.append(f"if len(v) < {int(s['minProperties'])}: return False")
        if "maxProperties" in s:
            objects.append(f"if len(v) > {int(s['maxProperties'])}: return False")
        for k in s.get("required", []):
            objects.append(f"if {k!r} not in v: return False")
        props = s.get("properties", {})
        for k, sub in props.items():
            objects.append(f"x = v.get({k!r}, _MISSING)")
            objects.append(f"if x is not _MISSING and not {self.call(sub, 'x')}: return False")
        if "additionalProperties" in s:
            known = self.const(frozenset(props))
            extra = s["additionalProperties"]
            if extra is False:
                objects.append(f"if not v.keys() <= {known}: return False")
            elif extra is not True:
                test = self.call(extra, "x")
                objects.append(f"for k, x in v.items():\n            if k not in {known} and not {test}: return False")
        if objects:
            if s.get("type") == "object":  # checked above: no second test
                body += [line.replace("\n    ", "\n") for line in objects]
            else:
                body.append("if isinstance(v, dict):")
                body += ["    " + line for line in objects]
        arrays = []
        if "items" in s:
            arrays.append(f"for x in v:\n            if not {self.call(s['items'], 'x')}: return False")
        if s.get("uniqueItems") is True:
            arrays.append("if not _unique(v): return False")
        if arrays:
            body.append("if isinstance(v, list):")
            body += ["    " + line for line in arrays]
        for sub in s.get("allOf", []):
            body.append(f"if not {self.call(sub, 'v')}: return False")
        if "if" in s:
            cond = self.call(s["if"], "v")
            if "then" in s:
                body.append(f"if {cond}:\n        if not {self.call(s['then'], 'v')}: return False")
            if "else" in s:
                body.append(f"if not {cond}:\n        if not {self.call(s['else'], 'v')}: return False")
        if "$ref" in s:
            body.append(f"if not {self.call(self.resolve(s['$ref']), 'v')}: return False")
        self.lines += [f"def {name}(v):", *("    " + line for line in body), "    return True", ""]
        return name


def _compile(schema: Mapping[str, Any]) -> tuple[_Compiler, str] | None:
    """The compiler that wrote ``schema``'s functions and the name of its entry function, or
    None when the schema uses a keyword this module does not compile."""
    try:
        compiler = _Compiler(schema)
        return compiler, compiler.function(schema)
    except (Unsupported, KeyError, TypeError, ValueError, re.error, RecursionError):  # RecursionError: a $ref cycle
        return None


def compile_schema(schema: Mapping[str, Any]) -> Check | None:
    """A predicate equal to ``Draft202012Validator(schema).is_valid``, or None when the schema
    uses a keyword this module does not compile."""
    compiled = _compile(schema)
    if compiled is None:
        return None
    compiler, entry = compiled
    namespace: dict[str, Any] = {"C": compiler.consts, "_equal": _equal, "_number": _number,
                                 "_is_integer": _is_integer, "_unique": _unique, "_MISSING": _MISSING}
    exec(compile("\n".join(compiler.lines), "<reconciler.fastschema>", "exec"), namespace)  # noqa: S102
    check: Check = namespace[entry]
    return check


def _source(value: Any) -> str:
    """A Python expression that builds ``value``, a constant of the compiled code, again."""
    if isinstance(value, frozenset) and all(isinstance(v, str) for v in value):
        return f"frozenset({sorted(value)!r})"  # sorted: the same text in every process
    search = getattr(value, "__self__", None)
    if isinstance(search, re.Pattern) and value == search.search:
        return f"re.compile({search.pattern!r}).search"
    if value is None or isinstance(value, (str, bool, int, list, dict)) or (
            isinstance(value, float) and value == value and abs(value) != float("inf")):
        text = repr(value)
        if eval(text) == value:  # noqa: S307 - our own repr of JSON values
            return text
    raise Unsupported(f"constant {value!r}")


def module_source(schema: Mapping[str, Any], digest: str) -> str | None:
    """``compile_schema(schema)`` as the text of a module (``check``, the predicate, and
    ``SCHEMA_SHA256``, the digest of the schema text it was compiled from), or None when the
    schema does not compile. The package ships the module for its own schema, so a run imports
    Python's cached bytecode instead of compiling the source again."""
    compiled = _compile(schema)
    if compiled is None:
        return None
    compiler, entry = compiled
    try:
        consts = [_source(c) for c in compiler.consts]
    except Unsupported:
        return None
    lines = [
        '"""The shipped JSON Schema compiled into Python by ``reconciler.fastschema``: generated by',
        "``python -m reconciler.fastschema``, do not edit (``tests/test_fastschema.py`` fails when it is not",
        'what the schema compiles to now, and a schema of another digest is compiled at run time)."""',
        "# ruff: noqa",
        "# mypy: ignore-errors",
        "",
        "import re",
        "",
        "from reconciler.fastschema import _MISSING, _equal, _is_integer, _number, _unique",
        "",
        f"SCHEMA_SHA256 = {digest!r}",
        "",
        "C = [",
        *(f"    {c}," for c in consts),
        "]",
        "",
        "",
        *compiler.lines,
        f"check = {entry}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - the generator of reconciler/_schema_check.py
    from pathlib import Path

    from reconciler.validation import load_schema, schema_digest

    text = module_source(load_schema(), schema_digest())
    if text is None:
        raise SystemExit("the schema does not compile: nothing written")
    (Path(__file__).parent / "_schema_check.py").write_text(text, encoding="utf-8")
