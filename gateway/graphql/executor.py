"""Strawberry's executor, with a short path for plain leaf fields.

A page of 50 threads answers about 1,100 fields, and most are plain: a column of a row (`subject`, `unread`,
an address's `name`) with no resolver of ours, no arguments and a scalar or enum type. graphql-core runs each
of them through the whole field machinery: it looks the field up, builds a resolve info (a tuple of fourteen
values, which Strawberry copies into its own), calls Strawberry's default resolver through two wrappers, asks
whether the result is awaitable, and completes it through the non-null, list, leaf and object checks. That was
most of the gateway's CPU on such a page.

`PlainFieldExecutor` answers such a field by reading the attribute as Strawberry's default resolver would and
coercing it as graphql-core would (`coerce_output_value`), and nothing else. Whatever is not plain in this sense
takes graphql-core's path: fields with a resolver, with arguments, of object, list, interface or union type,
`__typename`, and any value that is null where the type forbids it or fails to coerce (graphql-core then reports
the error exactly as before). Schema extensions that wrap every field's resolver (graphql middleware) switch the
short path off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from graphql import (
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    is_leaf_type,
)
from graphql.pyutils import Path, Undefined
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField


class PlainLeaf(NamedTuple):
    """How to answer a plain leaf field: read `name` with `read`, coerce with `leaf`."""

    read: Callable[[Any, str], Any]
    name: str
    leaf: GraphQLLeafType
    non_null: bool


# Per schema, per (type name, field name): the field's PlainLeaf, or None when it takes graphql-core's path.
_PLAIN: WeakKeyDictionary[GraphQLSchema, dict[tuple[str, str], PlainLeaf | None]] = WeakKeyDictionary()


def plain_leaf(schema: GraphQLSchema, parent_type: GraphQLObjectType, name: str) -> PlainLeaf | None:
    known = _PLAIN.get(schema)
    if known is None:
        known = _PLAIN[schema] = {}
    key = (parent_type.name, name)
    if key not in known:
        known[key] = _plain_leaf(parent_type, name)
    return known[key]


def _plain_leaf(parent_type: GraphQLObjectType, name: str) -> PlainLeaf | None:
    field_def = parent_type.fields.get(name)
    if field_def is None or field_def.args or not getattr(field_def.resolve, "_is_default", False):
        return None  # unknown (or __typename), takes arguments, or has a resolver
    field = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(field, StrawberryField) or not field.is_basic_field or field.default_resolver is None:
        return None
    graphql_type = field_def.type
    non_null = isinstance(graphql_type, GraphQLNonNull)
    inner = graphql_type.of_type if isinstance(graphql_type, GraphQLNonNull) else graphql_type
    if not is_leaf_type(inner):
        return None
    return PlainLeaf(field.default_resolver, field.python_name, inner, non_null)


class PlainFieldExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor; plain leaf fields answer without graphql-core's field machinery (see the module)."""

    _plain_fields: dict[int, tuple[Any, GraphQLObjectType, PlainLeaf | None]] | None = None

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Path,
        position_context: Any,
    ) -> Any:
        plain = self._plain_field(parent_type, field_details_list)
        if plain is not None:
            try:
                value = plain.read(source, plain.name)
                if value is None:
                    if not plain.non_null:
                        return None
                else:
                    coerced = plain.leaf.coerce_output_value(value)
                    if coerced is not None and coerced is not Undefined:
                        return coerced
            except Exception:  # noqa: S110 (graphql-core's path below reports it as it always did)
                pass
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def _plain_field(self, parent_type: GraphQLObjectType, field_details_list: Any) -> PlainLeaf | None:
        """The field's PlainLeaf, None when it takes graphql-core's path. graphql-core collects a selection's
        fields once per parent type and hands the same list to every object of a page, so the answer is kept by
        that list's identity and the parent type (with the list, so that its identity is not reused meanwhile)."""
        known = self._plain_fields
        if known is None:
            known = self._plain_fields = {}
        entry = known.get(id(field_details_list))
        if entry is not None and entry[0] is field_details_list and entry[1] is parent_type:
            return entry[2]
        node = field_details_list[0].node
        manager = self.middleware_manager
        wrapped = manager is not None and bool(manager.middlewares)  # an extension wraps every resolver
        plain = None if wrapped or node.arguments else plain_leaf(self.schema, parent_type, node.name.value)
        known[id(field_details_list)] = (field_details_list, parent_type, plain)
        return plain
