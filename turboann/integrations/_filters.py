"""Metadata conditions, one small tree for every framework, compiled to SQL over the documents table.

Each framework's filter syntax (LangChain's dicts, LlamaIndex's `MetadataFilters`,
Haystack's nested dicts) is parsed by its own module into this tree, so that the
semantics live in one place and become one SQL WHERE clause that SQLite
evaluates next to the data.

Semantics (JSON values, as the metadata is stored):
- every leaf is two-valued (0 or 1, never NULL), so NOT, AND and OR behave as
  in Python: `!=` and `not in` match documents that lack the field;
- `eq None` matches a missing field or a JSON null;
- numbers equal numbers (1 == 1.0), text equals text, booleans only booleans,
  lists and objects by their JSON text;
- ordering (`gt` ...) takes a number, or an ISO 8601 date string compared as a
  date (SQLite's julianday: offsets are honoured, naive times are UTC); None
  matches nothing; anything else is refused with a ValueError.
"""
from __future__ import annotations

import datetime as _dt
import json
import numbers
from dataclasses import dataclass
from typing import Any

# The documents table's columns a condition may name besides metadata keys.
COLUMNS = ("doc_id", "source_id", "text")
ORDERING = ("gt", "gte", "lt", "lte")
OPERATORS = ("eq", "ne", "in", "nin", *ORDERING, "contains", "any", "all", "text_match", "text_match_casefold",
             "is_empty", "exists")
_SQL_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NUMBER_TYPES = "('integer','real')"
# An ISO date string starts like this (julianday alone would also read '100' as a day number).
_ISO_GLOB = "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"


@dataclass(frozen=True)
class Field:
    """Where a compared value lives: a column of the documents table, or a metadata key path."""
    column: str | None = None
    path: tuple[str, ...] = ()

    @staticmethod
    def meta(*keys: str) -> "Field":
        for key in keys:
            if not isinstance(key, str) or not key or '"' in key:
                raise ValueError(f"metadata keys must be non-empty strings without '\"', got {key!r}")
        return Field(None, tuple(keys))

    def describe(self) -> str:
        return self.column or ".".join(self.path)


@dataclass(frozen=True)
class Compare:
    field: Field
    op: str
    value: Any = None


@dataclass(frozen=True)
class AllOf:
    parts: tuple


@dataclass(frozen=True)
class AnyOf:
    parts: tuple


@dataclass(frozen=True)
class Not:
    part: Any


def where(condition) -> tuple[str, list]:
    """(SQL expression, parameters) true for the rows `condition` matches; None matches every row."""
    params: list = []
    sql = "1" if condition is None else _node(condition, params)
    return sql, params


def _node(node, params: list) -> str:
    if isinstance(node, Compare):
        return _compare(node, params)
    if isinstance(node, AllOf):
        return "(" + " AND ".join(_node(p, params) for p in node.parts) + ")" if node.parts else "1"
    if isinstance(node, AnyOf):
        return "(" + " OR ".join(_node(p, params) for p in node.parts) + ")" if node.parts else "0"
    if isinstance(node, Not):
        return f"(NOT {_node(node.part, params)})"
    raise TypeError(f"a condition must be Compare, AllOf, AnyOf or Not, got {type(node).__name__}")


def _value_sql(field: Field, params: list) -> tuple[str, str]:
    """(value expression, JSON-type expression) of a field; the type is NULL where the field is missing."""
    if field.column is not None:
        if field.column not in COLUMNS:
            raise ValueError(f"a condition's column must be one of {', '.join(COLUMNS)}, got {field.column!r}")
        return field.column, f"(CASE WHEN {field.column} IS NULL THEN NULL ELSE 'text' END)"
    path = "$" + "".join(f'."{key}"' for key in field.path)
    params += [path, path]
    return "json_extract(metadata, ?)", "json_type(metadata, ?)"


def _compare(node: Compare, params: list) -> str:
    op, value = node.op, node.value
    if op not in OPERATORS:
        raise ValueError(f"a condition's operator must be one of {', '.join(OPERATORS)}, got {op!r}")
    if op == "ne":
        return f"(NOT {_compare(Compare(node.field, 'eq', value), params)})"
    if op == "nin":
        return f"(NOT {_compare(Compare(node.field, 'in', value), params)})"
    if op in ("contains", "any", "all"):
        return _array_test(node, params)
    x_params: list = []
    x, t = _value_sql(node.field, x_params)
    # x and t each take one path parameter: bind them in the order the SQL below names them
    # (every branch uses the type before the value).
    path = x_params[:1]
    if op == "eq":
        return _equals(x, t, path, value, params)
    if op == "in":
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"operator 'in' needs a list of values, got {type(value).__name__} {value!r}")
        return "(" + " OR ".join(_equals(x, t, path, v, params) for v in value) + ")" if value else "0"
    if op in ORDERING:
        return _ordering(x, t, path, op, value, node.field, params)
    if op in ("text_match", "text_match_casefold"):
        if not isinstance(value, str):
            raise ValueError(f"operator {op!r} needs a string, got {type(value).__name__} {value!r}")
        fold = "casefold" if op == "text_match_casefold" else ""
        params += path + path + [value]
        return f"COALESCE({t} = 'text' AND instr({fold}({x}), {fold}(?)) > 0, 0)"
    if op == "is_empty":
        params += path * 3 + path
        return f"({t} IS NULL OR {t} = 'null' OR ({t} = 'array' AND json_array_length({x}) = 0))"
    # exists
    params += path
    return f"({t} IS NOT NULL)" if value in (True, None) else f"({t} IS NULL)"


def _equals(x: str, t: str, path: list, value, params: list) -> str:
    """Two-valued `x == value` (see the module's semantics)."""
    if value is None:
        params += path * 2
        return f"({t} IS NULL OR {t} = 'null')"
    if isinstance(value, bool):
        params += path
        return f"({t} IS '{'true' if value else 'false'}')"
    if isinstance(value, numbers.Real):
        params += path + path + [_number(value)]
        return f"COALESCE({t} IN {_NUMBER_TYPES} AND {x} = ?, 0)"
    if isinstance(value, (_dt.date, _dt.datetime)):
        value = value.isoformat()
    if isinstance(value, str):
        params += path + path + [value]
        return f"COALESCE({t} = 'text' AND {x} = ?, 0)"
    if isinstance(value, (list, tuple, dict)):
        params += path + path + [canonical_json(value)]
        return f"COALESCE({t} IN ('array','object') AND {x} = json(?), 0)"
    raise ValueError(f"a condition's value must be None, a bool, number, string, date, list or dict, "
                     f"got {type(value).__name__} {value!r}")


def _ordering(x: str, t: str, path: list, op: str, value, field: Field, params: list) -> str:
    sql_op = _SQL_ORDER[op]
    if value is None:
        return "0"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        params += path + path + [_number(value)]
        return f"COALESCE({t} IN {_NUMBER_TYPES} AND {x} {sql_op} ?, 0)"
    if isinstance(value, (_dt.date, _dt.datetime)):
        value = value.isoformat()
    if isinstance(value, str) and _is_iso_date(value):
        params += path + path + path + [value]
        return (f"COALESCE({t} = 'text' AND {x} GLOB {_ISO_GLOB} AND julianday({x}) {sql_op} julianday(?), 0)")
    raise ValueError(f"operator {op!r} on {field.describe()!r} needs a number or an ISO 8601 date, "
                     f"got {type(value).__name__} {value!r}")


def _array_test(node: Compare, params: list) -> str:
    """contains: the field is a JSON array holding the value; any / all: holding any / all of the values."""
    if node.field.column is not None:
        raise ValueError(f"operator {node.op!r} needs a metadata field holding a list, got column {node.field.column!r}")
    values = [node.value] if node.op == "contains" else node.value
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"operator {node.op!r} needs a list of values, got {type(values).__name__} {values!r}")
    if not values:
        return "1" if node.op == "all" else "0"
    parts = []
    for v in values:
        x_params: list = []
        _value_sql(node.field, x_params)
        member: list = []
        test = _equals("value", "type", [], v, member)
        params += x_params[:1] + x_params[:1] + member
        parts.append(f"COALESCE(json_type(metadata, ?) = 'array' AND "
                     f"EXISTS (SELECT 1 FROM json_each(metadata, ?) WHERE {test}), 0)")
    return "(" + (" AND " if node.op == "all" else " OR ").join(parts) + ")"


def _number(value) -> int | float:
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _is_iso_date(text: str) -> bool:
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return len(text) >= 10 and text[4] == "-"


def canonical_json(value) -> str:
    """The JSON text metadata is stored as (compact), which SQLite's json() reproduces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def casefold(text):
    """SQL function `casefold`: Unicode case folding, which SQLite's lower() does only for ASCII."""
    return text.casefold() if isinstance(text, str) else text
