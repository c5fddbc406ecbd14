"""The JSON Schema compiled once into a plain predicate: valid or not, nothing else.

jsonschema's validator costs about half a millisecond per document on our schema (it walks
the schema, evolves a validator per subschema and resolves references on every call). Most
documents are valid, so validation asks this predicate first and calls jsonschema only for
documents it rejects, to get the errors and their paths: every message still comes from
jsonschema, and a document it accepts is one jsonschema accepts too
(``tests/test_fastschema.py`` checks both on every example and on mutations of a varied
corpus).

Only the Draft 2020-12 keywords our schema uses are compiled; a schema with any other
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


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def _any_of(tests: list[Check]) -> Check:
    return lambda v: any(f(v) for f in tests)


def _bound(word: str, b: Any) -> Check:
    if word == "minimum":
        return lambda v: not _number(v) or bool(v >= b)
    if word == "maximum":
        return lambda v: not _number(v) or bool(v <= b)
    if word == "exclusiveMinimum":
        return lambda v: not _number(v) or bool(v > b)
    return lambda v: not _number(v) or bool(v < b)


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, target: str) -> Check:
        if not target.startswith("#/"):
            raise Unsupported(target)
        if target not in self.refs:
            self.refs[target] = lambda v: False  # placeholder while compiling (recursion)
            node: Any = self.root
            for part in target[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, dict) or part not in node:
                    raise Unsupported(target)
                node = node[part]
            compiled = self.compile(node)
            self.refs[target] = compiled
        table, key = self.refs, target
        return lambda v: table[key](v)

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        unknown = set(schema) - _SUPPORTED
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks: list[Check] = []
        s = schema
        if "type" in s:
            names = [s["type"]] if isinstance(s["type"], str) else list(s["type"])
            tests = [_TYPES[n] for n in names]
            checks.append(tests[0] if len(tests) == 1 else _any_of(tests))
        if "const" in s:
            c = s["const"]
            checks.append(lambda v: _equal(v, c))
        if "enum" in s:
            options = list(s["enum"])
            if all(isinstance(o, str) for o in options):
                strings = frozenset(options)
                checks.append(lambda v: isinstance(v, str) and v in strings)
            else:
                checks.append(lambda v: any(_equal(v, o) for o in options))
        if "pattern" in s:
            search = re.compile(s["pattern"]).search
            checks.append(lambda v: not isinstance(v, str) or search(v) is not None)
        if "minLength" in s:
            n = s["minLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) >= n)
        if "maxLength" in s:
            n2 = s["maxLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) <= n2)
        for word in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if word in s:
                checks.append(_bound(word, s[word]))
        if "minProperties" in s:
            m = s["minProperties"]
            checks.append(lambda v: not isinstance(v, dict) or len(v) >= m)
        if "maxProperties" in s:
            m2 = s["maxProperties"]
            checks.append(lambda v: not isinstance(v, dict) or len(v) <= m2)
        if "required" in s:
            req = list(s["required"])
            checks.append(lambda v: not isinstance(v, dict) or all(k in v for k in req))
        props: dict[str, Check] = {k: self.compile(sub) for k, sub in s.get("properties", {}).items()}
        if props:
            checks.append(lambda v: not isinstance(v, dict)
                          or all(f(v[k]) for k, f in props.items() if k in v))
        if "additionalProperties" in s:
            extra = s["additionalProperties"]
            known = frozenset(props)
            if extra is False:
                checks.append(lambda v: not isinstance(v, dict) or all(k in known for k in v))
            else:
                sub = self.compile(extra)
                checks.append(lambda v: not isinstance(v, dict)
                              or all(sub(x) for k, x in v.items() if k not in known))
        if "items" in s:
            item = self.compile(s["items"])
            checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
        if s.get("uniqueItems") is True:
            checks.append(lambda v: not isinstance(v, list) or all(
                not _equal(v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v))))
        for sub_schema in s.get("allOf", []):
            checks.append(self.compile(sub_schema))
        if "if" in s:
            cond = self.compile(s["if"])
            then = self.compile(s["then"]) if "then" in s else (lambda v: True)
            other = self.compile(s["else"]) if "else" in s else (lambda v: True)
            checks.append(lambda v: then(v) if cond(v) else other(v))
        if "$ref" in s:
            checks.append(self.ref(s["$ref"]))
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(c(v) for c in checks)


def compile_schema(schema: Mapping[str, Any]) -> Check | None:
    """A predicate equal to ``Draft202012Validator(schema).is_valid``, or None when the schema
    uses a keyword this module does not compile."""
    try:
        return _Compiler(schema).compile(schema)
    except (Unsupported, KeyError, TypeError, re.error):
        return None
