"""The compiled schema agrees with jsonschema: what it accepts, jsonschema accepts.

validation.py skips jsonschema for documents the compiled predicate accepts, so a document
it wrongly accepted would lose its errors: checked here on every example, on a varied
corpus and on thousands of mutations of it (missing, extra, retyped and emptied fields).
"""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from reconciler.fastschema import compile_schema
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


@pytest.fixture(scope="module")
def check():
    compiled = compile_schema(load_schema())
    assert compiled is not None, "our schema compiles"
    return compiled


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
    ({"$defs": {"s": {"type": "string"}}, "items": {"$ref": "#/$defs/s"}}, ["a", 2], False),
])
def test_keywords(schema, value, valid):
    check = compile_schema(schema)
    assert check is not None
    assert check(value) is valid is Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize("schema", [{"format": "uri"}, {"patternProperties": {"a": {}}}, {"$ref": "http://x"},
                                    {"properties": {"a": {"contains": {}}}}])
def test_other_keywords_do_not_compile(schema):
    assert compile_schema(schema) is None
