"""The compiled schema agrees with jsonschema: what it accepts, jsonschema accepts.

validation.py skips jsonschema for documents the compiled predicate accepts, so a document
it wrongly accepted would lose its errors: checked here on every example, on a varied
corpus and on thousands of mutations of it (missing, extra, retyped and emptied fields).
"""

from __future__ import annotations

import copy
import hashlib
import random
import re
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from reconciler.fastschema import Unsupported, _source, compile_schema, module_source
from reconciler.validation import load_schema

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from corpus import generate  # noqa: E402


def documents(paths):
    for p in paths:
        try:
            for doc in yaml.load_all(p.read_bytes(), Loader=yaml.CSafeLoader):
                if doc is not None:
                    yield doc
        except yaml.YAMLError:
            continue


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


REPLACEMENTS = [None, "", " x", "x ", 0, -1, 1.5, 1.0, True, False, "true", [], {}, ["a", "a"], {"fromEnv": "1X"},
                {"fromEnv": "X", "fromFile": "f"}, "noAuth", "basic", "ecr", "token", "sts", "secret", "helm",
                "zarf", "pack", "system", "galaxy", "http://x", "https://", "reconciler/v1", "OciRegistry",
                "HelmRegistry", "Settings", "arn:aws:iam::123456789012:role/x", "24h", "0s", "x" * 300]


def mutate(doc, rnd: random.Random):
    doc = copy.deepcopy(doc)
    for _ in range(rnd.randint(1, 2)):
        paths = list(_paths(doc))
        path = rnd.choice(paths)
        if not path:
            continue
        parent, last = _get(doc, path[:-1]), path[-1]
        r = rnd.random()
        if r < 0.3 and isinstance(parent, dict):
            del parent[last]
        elif r < 0.45 and isinstance(parent, dict):
            parent[rnd.choice(["extra", "pasword", "type", "name", "fromEnv", "version", "sync"])] = rnd.choice(REPLACEMENTS)
        elif r < 0.5 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[last] = copy.deepcopy(rnd.choice(REPLACEMENTS))
    return doc


@pytest.fixture(scope="module", params=["compiled now", "shipped"])
def check(request):
    """Both predicates: the schema compiled in this process, and the one the package ships
    compiled (``reconciler/_schema_check.py``, whose constants are written back as source)."""
    if request.param == "shipped":
        from reconciler import _schema_check

        return _schema_check.check
    compiled = compile_schema(load_schema())
    assert compiled is not None, "our schema compiles"
    return compiled


def test_the_shipped_module_is_what_the_schema_compiles_to_now():
    """``python -m reconciler.fastschema`` writes it; after a change of the schema (or of the
    compiler) this fails until it is run again."""
    from reconciler import _schema_check
    from reconciler.validation import SCHEMA_FILE

    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()  # computed here, not by the code under test
    text = module_source(load_schema(), digest)
    assert text is not None
    assert Path(_schema_check.__file__).read_text(encoding="utf-8") == text, "run: python -m reconciler.fastschema"


def test_validation_takes_the_shipped_predicate_only_for_the_schema_it_was_compiled_from(monkeypatch):
    from reconciler import _schema_check, validation

    validation._compiled.cache_clear()
    try:
        assert validation._compiled() is _schema_check.check
        validation._compiled.cache_clear()
        monkeypatch.setattr(_schema_check, "SCHEMA_SHA256", "0" * 64)  # as if the schema file were edited
        compiled = validation._compiled()
        assert compiled is not None and compiled is not _schema_check.check
        assert compiled.__code__.co_filename == "<reconciler.fastschema>"  # compiled in this process
    finally:
        validation._compiled.cache_clear()


@pytest.mark.parametrize("value", [frozenset({"b", "a"}), "x'\"", 1, -2.5, True, None, [1, "a", {"k": [None]}]])
def test_constants_are_written_back_as_themselves(value):
    assert eval(_source(value)) == value  # noqa: S307


def test_a_pattern_is_written_back_as_its_compiled_search():
    search = eval(_source(re.compile(r"^a\\+[^\u0000]$").search), {"re": re})  # noqa: S307
    assert search.__self__.pattern == r"^a\\+[^\u0000]$" and search("a\\x") and not search("b")


@pytest.mark.parametrize("value", [float("inf"), float("nan"), object(), {1, 2}])
def test_a_constant_without_a_faithful_source_is_not_shipped(value):
    with pytest.raises(Unsupported):
        _source(value)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return list(documents(generate(root, 400, seed=7)))


def test_examples_agree(check):
    validator = Draft202012Validator(load_schema())
    paths = sorted((ROOT / "tests" / "examples").rglob("*.y*ml"))
    docs = list(documents(paths))
    assert len(docs) > 10
    for doc in docs:
        assert check(doc) == validator.is_valid(doc), doc


def test_corpus_and_mutations_agree(check, corpus):
    validator = Draft202012Validator(load_schema())
    rnd = random.Random(11)
    assert all(check(d) and validator.is_valid(d) for d in corpus)
    disagree, invalid = [], 0
    for _ in range(4000):
        doc = mutate(rnd.choice(corpus), rnd)
        ours, theirs = check(doc), validator.is_valid(doc)
        invalid += not theirs
        if ours != theirs:
            disagree.append(doc)
    assert not disagree, disagree[:3]
    assert invalid > 1500  # the mutations do reach the schema's rules


@pytest.mark.parametrize("schema, value, valid", [
    ({"const": True}, 1, False),
    ({"const": 1}, True, False),
    ({"const": 1}, 1.0, True),
    ({"type": "integer"}, 1.0, True),
    ({"type": "integer"}, True, False),
    ({"type": "number"}, False, False),
    ({"enum": [0]}, False, False),
    ({"uniqueItems": True}, [1, True], True),
    ({"uniqueItems": True}, [{"a": 1}, {"a": 1.0}], False),
    ({"minimum": 0}, -1, False),
    ({"minimum": 0}, "x", True),
    ({"properties": {"a": {"type": "string"}}, "additionalProperties": False}, {"a": "x", "b": 1}, False),
    ({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"a": 1}, False),
    ({"if": {"required": ["a"]}, "then": {"required": ["b"]}}, {"c": 1}, True),
    ({"allOf": [{"then": {"required": ["b"]}, "else": False}]}, {"a": 1}, True),  # no if: then, else do nothing
    ({"$defs": {"s": {"type": "string"}}, "items": {"$ref": "#/$defs/s"}}, ["a", 2], False),
    # inline forms: an if/then/else alone, a discriminator's object test, properties read once each
    *[({"allOf": [{"if": {"properties": {"k": {"const": "a"}}, "required": ["k"]},
                   "then": {"properties": {"n": {"type": "integer"}}},
                   "else": {"type": "object", "required": ["m"], "properties": {"m": {"enum": ["x"]}}}}]}, v, ok)
      for v, ok in (({"k": "a", "n": 1}, True), ({"k": "a", "n": "1"}, False), ({"k": "b", "m": "x"}, True),
                    ({"k": "b", "m": "y"}, False), ({"n": 1}, False), ("k", True), ([1], True))],
    ({"properties": {"a": {"properties": {"b": {"type": "string"}}}}}, {"a": {"b": 1}}, False),
    ({"properties": {"a": {"properties": {"b": {"type": "string"}}}}}, {"a": 1}, True),
    ({"properties": {"a": {"type": "object", "properties": {"b": {"const": 1}}}}}, {"a": []}, False),
])
def test_keywords(schema, value, valid):
    check = compile_schema(schema)
    assert check is not None
    assert check(value) is valid is Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize("schema", [{"format": "uri"}, {"patternProperties": {"a": {}}}, {"$ref": "http://x"},
                                    {"properties": {"a": {"contains": {}}}},
                                    {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}])
def test_other_keywords_do_not_compile(schema):
    assert compile_schema(schema) is None


# ------------------------------------------- the quick check in validation (issue 11.3)


def test_the_schema_refuses_every_literal_secret(check, corpus):
    """validation's quick path skips the literal-secret walk for documents the schema accepts:
    so no accepted document may hold a literal in a secret field, wherever it is put."""
    from reconciler.model import SECRET_FIELDS

    tried = 0
    for doc in corpus[:150]:
        for path in _paths(doc["spec"], ("spec",)):
            if not isinstance(_get(doc, path), dict):
                continue
            for field in sorted(SECRET_FIELDS):
                for literal in ("hunter2", 1, True, ["x"], 1.5):
                    mutated = copy.deepcopy(doc)
                    _get(mutated, path)[field] = literal
                    tried += 1
                    assert not check(mutated), (path, field, literal)
    assert tried > 1000


HOSTILE = ["a b", " x", "a\x1bb", "a\u202eb", "x\n", "a\tb", "PALETTE_API_KEY", {"fromEnv": "GITHUB_TOKEN"},
           {"fromEnv": "RECONCILER_STATE_KEY"}, {"fromFile": "/proc/self/environ"}, {"fromFile": ".git/config"},
           "https://u:p@h", "a\u00a0b", "a\u2003b", "\ufeffx", "hunter2"]


def test_the_quick_check_reports_what_the_walks_report(corpus, tmp_path, monkeypatch):
    """The same problems, positions and verdicts with and without validation's quick path, on
    the corpus and on mutations that put control characters, whitespace, reserved names,
    file references and literals anywhere (keys too)."""
    from reconciler import loader, validation

    rnd = random.Random(5)
    docs = list(corpus[:120])
    for doc in corpus[:200]:  # every one-token field, wherever it is, given inner and outer spaces
        for path in _paths(doc):
            if path and path[-1] in validation._TOKEN_FIELDS and isinstance(_get(doc, path), str):
                for spaced in ("a b", " x", "x\u00a0y"):
                    mutated = copy.deepcopy(doc)
                    _get(mutated, path[:-1])[path[-1]] = spaced
                    docs.append(mutated)
    for _ in range(1500):
        doc = copy.deepcopy(rnd.choice(corpus))
        paths = [p for p in _paths(doc) if p]
        for _ in range(rnd.randint(1, 2)):
            path = rnd.choice(paths)
            parent = _get(doc, path[:-1])
            if rnd.random() < 0.15 and isinstance(parent, dict):
                parent[rnd.choice(["x y", "a\x1bb", "password", "caFile", "fromEnv"])] = rnd.choice(HOSTILE)
            else:
                parent[path[-1]] = copy.deepcopy(rnd.choice(HOSTILE + REPLACEMENTS))
            paths = [p for p in _paths(doc) if p]
        docs.append(doc)
    text = "".join("---\n" + yaml.safe_dump(d, allow_unicode=False) for d in docs)
    (tmp_path / "registries.d").mkdir()
    out = loader.LoadedFile("f.yaml")
    loader.parse_text("f.yaml", text, out)
    assert len(out.documents) == len(docs) and sum(d.strings is not None for d in out.documents) > 1000

    def results():
        found = []
        for d in out.documents:
            c = validation._Checker(d).run()
            found.append((c.kind, c.ok, sorted(map(str, c.problems))))
        return found

    quick = results()
    monkeypatch.setattr(validation._Checker, "quick", lambda self, value: False)
    walked = results()
    assert quick == walked
    assert sum(not ok for _, ok, _ in walked) > 600  # the mutations do reach the checks


def test_isprintable_refuses_every_character_the_walks_look_for():
    """validation's quick path trusts str.isprintable (and a search for ' ') to find what the
    hygiene walk refuses in ASCII text: every character of text.CONTROL and every whitespace
    character; text that is not ASCII is searched with text.CONTROL itself (some invisible
    characters are printable to Python: U+034F, U+3164, variation selectors)."""
    import re

    from reconciler.text import CONTROL

    space = re.compile(r"\s")
    looked_for = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF
                  and (CONTROL.match(chr(c)) or space.match(chr(c)))]
    assert len(looked_for) > 60
    assert [c for c in looked_for if c != " " and c.isprintable() and c.isascii()] == []
