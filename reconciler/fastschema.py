"""The JSON Schema compiled once into a plain predicate: valid or not, nothing else.

jsonschema's validator costs about half a millisecond per document on our schema (it walks
the schema, evolves a validator per subschema and resolves references on every call). Most
documents are valid, so validation asks this predicate first and calls jsonschema only for
documents it rejects, to get the errors and their paths: every message still comes from
jsonschema, and a document it accepts is one jsonschema accepts too
(``tests/test_fastschema.py`` checks both on every example and on mutations of a varied
corpus).

The schema is compiled into Python source once per process (one function per subschema),
as fastjsonschema does for older drafts. Only the Draft 2020-12 keywords our schema uses are
compiled; a schema with any other
keyword compiles to ``None`` and jsonschema checks every document, as before.
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
    "object": "isinstance(v, dict)",
    "array": "isinstance(v, list)",
    "string": "isinstance(v, str)",
    "boolean": "(v is True or v is False)",
    "null": "v is None",
    "number": "_number(v)",
    "integer": "_is_integer(v)",
}


class _Compiler:
    """Writes one Python function per subschema (plain ifs, early ``return False``) and
    compiles them once: no per-call schema walk, no closures, no generators."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.lines: list[str] = []
        self.consts: list[Any] = []
        self.done: dict[int, str] = {}  # id(subschema) -> function name
        self.keep: list[Any] = []  # keeps the ids above alive

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

    def function(self, schema: Any) -> str:
        if id(schema) in self.done:
            return self.done[id(schema)]
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
        body: list[str] = []
        s = schema
        if "type" in s:
            names = [s["type"]] if isinstance(s["type"], str) else list(s["type"])
            body.append(f"if not ({' or '.join(_TYPE_TESTS[n] for n in names)}): return False")
        if "const" in s:
            body.append(f"if not _equal(v, {self.const(s['const'])}): return False")
        if "enum" in s:
            options = list(s["enum"])
            if all(isinstance(o, str) for o in options):
                body.append(f"if not (isinstance(v, str) and v in {self.const(frozenset(options))}): return False")
            else:
                body.append(f"if not any(_equal(v, o) for o in {self.const(options)}): return False")
        strings = []
        if "pattern" in s:
            strings.append(f"{self.const(re.compile(s['pattern']).search)}(v) is None")
        if "minLength" in s:
            strings.append(f"len(v) < {int(s['minLength'])}")
        if "maxLength" in s:
            strings.append(f"len(v) > {int(s['maxLength'])}")
        if strings:
            body.append(f"if isinstance(v, str) and ({' or '.join(strings)}): return False")
        numbers = []
        for word, op in (("minimum", "<"), ("maximum", ">"), ("exclusiveMinimum", "<="), ("exclusiveMaximum", ">=")):
            if word in s:
                numbers.append(f"v {op} {self.const(s[word])}")
        if numbers:
            body.append(f"if _number(v) and ({' or '.join(numbers)}): return False")
        objects = []
        if "minProperties" in s:
            objects.append(f"if len(v) < {int(s['minProperties'])}: return False")
        if "maxProperties" in s:
            objects.append(f"if len(v) > {int(s['maxProperties'])}: return False")
        for k in s.get("required", []):
            objects.append(f"if {k!r} not in v: return False")
        props = s.get("properties", {})
        for k, sub in props.items():
            objects.append(f"if {k!r} in v and not {self.function(sub)}(v[{k!r}]): return False")
        if "additionalProperties" in s:
            known = self.const(frozenset(props))
            extra = s["additionalProperties"]
            if extra is False:
                objects.append(f"for k in v:\n            if k not in {known}: return False")
            elif extra is not True:
                f = self.function(extra)
                objects.append(f"for k, x in v.items():\n            if k not in {known} and not {f}(x): return False")
        if objects:
            body.append("if isinstance(v, dict):")
            body += ["    " + line for line in objects]
        arrays = []
        if "items" in s:
            arrays.append(f"for x in v:\n            if not {self.function(s['items'])}(x): return False")
        if s.get("uniqueItems") is True:
            arrays.append("if not _unique(v): return False")
        if arrays:
            body.append("if isinstance(v, list):")
            body += ["    " + line for line in arrays]
        for sub in s.get("allOf", []):
            body.append(f"if not {self.function(sub)}(v): return False")
        if "if" in s:
            cond = self.function(s["if"])
            then = self.function(s["then"]) if "then" in s else None
            other = self.function(s["else"]) if "else" in s else None
            if then:
                body.append(f"if {cond}(v):\n        if not {then}(v): return False")
            if other:
                body.append(f"if not {cond}(v):\n        if not {other}(v): return False")
        if "$ref" in s:
            body.append(f"if not {self.function(self.resolve(s['$ref']))}(v): return False")
        self.lines += [f"def {name}(v):", *("    " + line for line in body), "    return True", ""]
        return name


def compile_schema(schema: Mapping[str, Any]) -> Check | None:
    """A predicate equal to ``Draft202012Validator(schema).is_valid``, or None when the schema
    uses a keyword this module does not compile."""
    try:
        compiler = _Compiler(schema)
        entry = compiler.function(schema)
    except (Unsupported, KeyError, TypeError, ValueError, re.error):
        return None
    namespace: dict[str, Any] = {"C": compiler.consts, "_equal": _equal, "_number": _number,
                                 "_is_integer": _is_integer, "_unique": _unique}
    exec(compile("\n".join(compiler.lines), "<reconciler.fastschema>", "exec"), namespace)  # noqa: S102
    check: Check = namespace[entry]
    return check
