"""The export metadata's JSON Schema (``vrwkv_edge/data/metadata.schema.json``, shipped in the wheel for the C++
and TensorRT runtimes to read too) and a strict validator for the subset of JSON Schema 2020-12 it uses.

The validator is small on purpose: no dependency, no network lookups, no recursion into ``$ref`` cycles (the
schema has none), and every error names the JSON path of the offending value (``model.n_layer``).  The test
suite cross-checks it against the ``jsonschema`` package on valid and broken documents.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "metadata.schema.json"
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool,
          "null": type(None)}


class SchemaError(ValueError):
    """A document that does not follow the schema; the message starts with the JSON path at fault."""


@lru_cache(maxsize=1)
def metadata_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate(doc: Any, schema: dict | None = None) -> None:
    """Raises :class:`SchemaError` for the first place where ``doc`` breaks ``schema`` (default: the metadata's)."""
    root = schema if schema is not None else metadata_schema()
    _check(doc, root, root, "")


def _is(value: Any, type_name: str) -> bool:
    if isinstance(value, bool):                     # JSON booleans are not numbers
        return type_name == "boolean"
    return isinstance(value, _TYPES[type_name])


def _same(a: Any, b: Any) -> bool:
    """JSON equality (``1`` is not ``true``; ``1`` equals ``1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _check(value: Any, schema: dict, root: dict, path: str) -> None:
    where = path or "<document>"
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"schema: unsupported $ref {ref!r}")
        return _check(value, root["$defs"][ref[len("#/$defs/"):]], root, path)
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                return _check(value, option, root, path)
            except SchemaError as e:
                errors.append(str(e))
        raise SchemaError(f"{where}: matches none of the allowed forms ({'; '.join(errors)})")
    if "const" in schema and not _same(value, schema["const"]):
        raise SchemaError(f"{where}: must be {json.dumps(schema['const'])}, got {_show(value)}")
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        raise SchemaError(f"{where}: must be one of {json.dumps(schema['enum'])}, got {_show(value)}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, t) for t in types):
            raise SchemaError(f"{where}: must be {' or '.join(types)}, got {type(value).__name__} {_show(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{where}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{where}: {value} is more than the maximum {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            raise SchemaError(f"{where}: a string of {len(value)} characters is outside the allowed length")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{where}: {_show(value)} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            raise SchemaError(f"{where}: {len(value)} items is outside [{schema.get('minItems', 0)}, "
                              f"{schema.get('maxItems', 'any')}]")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, dict):
        _check_object(value, schema, root, path, where)


def _check_object(value: dict, schema: dict, root: dict, path: str, where: str) -> None:
    if len(value) < schema.get("minProperties", 0) or len(value) > schema.get("maxProperties", len(value)):
        raise SchemaError(f"{where}: {len(value)} keys is outside [{schema.get('minProperties', 0)}, "
                          f"{schema.get('maxProperties', 'any')}]")
    missing = [k for k in schema.get("required", ()) if k not in value]
    if missing:
        raise SchemaError(f"{where}: missing key {missing[0]!r}")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = f"{path}.{key}" if path else key
        if "propertyNames" in schema:
            _check(key, schema["propertyNames"], root, f"{sub} (key)")
        if key in props:
            _check(item, props[key], root, sub)
        elif extra is False:
            raise SchemaError(f"{sub}: unknown key (not in the metadata schema)")
        elif isinstance(extra, dict):
            _check(item, extra, root, sub)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."
