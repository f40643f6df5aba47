"""Strawberry's executor, with a short path for plain fields.

A page of 50 threads answers about 1,100 fields, and most are plain: a column of a row (`subject`, `unread`,
an address's `name`), or an object or list of objects held by its parent (`participants`, `edges`,
`pageInfo`), with no resolver of ours and no arguments. graphql-core runs each of them through the whole field
machinery: it looks the field up, builds a resolve info (a tuple of fourteen values, which Strawberry copies
into its own), calls Strawberry's default resolver through two wrappers, asks whether the result is awaitable,
and completes it through the non-null, list, leaf and object checks, item by item. That was most of the
gateway's CPU on such a page.

`PlainFieldExecutor` reads such a field as Strawberry's default resolver would and then:

* a scalar or enum: coerces it as graphql-core would (`coerce_output_value`), and nothing else; a str of a
  String or ID and a bool of a Boolean (their own coercion), and an allowed null, are answered in the loop over
  the selection itself (`execute_fields`), without a path or a call per field;
* an object, or a list of objects, whose type checks nothing at run time, or only Strawberry's isinstance check
  of a type that implements an interface (`Thread`, `Message`: no resolve info needed): executes each object's
  selection directly, with graphql-core's own error handling (an error nulls the nearest nullable place, item or
  field, as before) and awaiting what the selection awaits.

An object whose whole selection is plain, down to its leaves (a page's connection, its edges, their threads,
messages, addresses and labels), is answered by one function made once per selection (`_renderer`): it reads
and checks each field as above and builds the object's answer without a path, a field lookup or a call per
field. Whatever it does not answer itself (an error, a null where none may be, a value that does not coerce,
an object to await or not of the field's type) sends that object, and only it, down graphql-core's path, which
reads it again and reports it as before. A render depends only on the selection, the types and the schema, and
the selection on the variables only through directives: for an operation with no directive and no fragment
variables anywhere, each render is made once for every execution of the operation (`_operation_renders`: the
document cached by Strawberry's ParserCache comes back as the same nodes), not once per execution.

A field with a resolver is read like a plain one when a list resolver loaded its answer for the whole page
beforehand (`field_of(..., prefetched=(attribute, sentinel))`: a thread's `lastMessage` and `labels` on a page of
threads): the attribute's value, unless it is the sentinel, in which case the resolver runs as usual. So is a
field whose resolver is a method of the object that reads nothing else (only `self`: no info, root or arguments;
not async; no field extensions or permissions), such as a message's address lists: it is called directly, and if
it raises, graphql-core's path calls it again and reports the error as before.

Everything else takes graphql-core's path: fields with any other resolver, with arguments or
directives, of interface or union type, objects of a type with an `is_type_of` of its own, `__typename`, and any
value that is null where the type forbids it, fails to coerce, is not of the field's type or is not a list where
one is due (graphql-core then reports the error exactly as before). Schema extensions that wrap every field's
resolver (graphql middleware) switch the short path off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import GeneratorType
from typing import Any, NamedTuple, cast
from weakref import WeakKeyDictionary

from graphql import (
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLID,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    Visitor,
    is_leaf_type,
    visit,
)
from graphql.language import BREAK
from graphql.pyutils import Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

from gateway.identity import ByIdentity


class PlainLeaf(NamedTuple):
    """How to answer a plain leaf field: read `name` with `read`, coerce with `leaf`. A value of exactly the type
    `same` (a str of a String or ID, a bool of a Boolean) is its own coercion: it is answered as it is."""

    read: Callable[[Any, str], Any]
    name: str
    leaf: GraphQLLeafType
    non_null: bool
    same: type | None


class PlainObjects(NamedTuple):
    """How to answer a plain field holding an object (`item_type` is None) or a list of objects."""

    read: Callable[[Any, str], Any]
    name: str
    object_type: GraphQLObjectType
    field_type: GraphQLOutputType
    item_type: GraphQLOutputType | None
    # The type's run-time check when it implements an interface: Strawberry's isinstance check, which reads no
    # resolve info (a type of its own `is_type_of` is left to graphql-core).
    check: Callable[[Any, Any], Any] | None


Plain = PlainLeaf | PlainObjects
# The metadata key of a field with a resolver whose answer a list resolver may have loaded beforehand: (the
# object's attribute holding it, the sentinel it holds otherwise). See gateway.graphql.types.fields.field_of.
PREFETCHED = "gateway.prefetched"
# Scalars whose coercion returns a value of this exact Python type unchanged (graphql-core's serialize_*).
SAME: dict[GraphQLLeafType, type] = {GraphQLString: str, GraphQLID: str, GraphQLBoolean: bool}
# A selection set's fields for one parent type, each with how to answer it (None: execute_field decides).
Plan = list[tuple[str, Any, PlainLeaf | None]]

# Per schema, per (type name, field name): how to answer the field, or None when it takes graphql-core's path.
_PLAIN: WeakKeyDictionary[GraphQLSchema, dict[tuple[str, str], Plain | None]] = WeakKeyDictionary()


def plain_field(schema: GraphQLSchema, parent_type: GraphQLObjectType, name: str) -> Plain | None:
    known = _PLAIN.get(schema)
    if known is None:
        known = _PLAIN[schema] = {}
    key = (parent_type.name, name)
    if key not in known:
        known[key] = _plain_field(parent_type, name)
    return known[key]


def _unwrap(graphql_type: GraphQLOutputType) -> tuple[GraphQLOutputType, bool]:
    if isinstance(graphql_type, GraphQLNonNull):
        return graphql_type.of_type, True
    return graphql_type, False


def _prefetched(sentinel: object) -> Callable[[Any, str], Any]:
    def read(source: Any, attribute: str) -> Any:
        value = getattr(source, attribute)
        if value is sentinel:
            raise LookupError(attribute)  # not prefetched: graphql-core's path calls the resolver
        return value

    return read


def _of_itself(field: StrawberryField) -> bool:
    """Whether the field's resolver is a plain method of the object: it reads only `self` (no info, root,
    parent or arguments), answers at once (not async), and nothing wraps it (field extensions, permissions)."""
    resolver = field.base_resolver
    return (
        resolver is not None
        and not resolver.is_async
        and not resolver.arguments
        and resolver.self_parameter is not None
        and resolver.info_parameter is None
        and resolver.root_parameter is None
        and resolver.parent_parameter is None
        and not field.extensions
        and not field.permission_classes
    )


def _computed(method: Any) -> Callable[[Any, str], Any]:
    def read(source: Any, _name: str) -> Any:
        return method(source)  # an error: graphql-core's path calls the resolver again, and reports it

    return read


def _plain_field(parent_type: GraphQLObjectType, name: str) -> Plain | None:
    field_def = parent_type.fields.get(name)
    if field_def is None or field_def.args:
        return None  # unknown (or __typename), or takes arguments
    field = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(field, StrawberryField):
        return None
    if getattr(field_def.resolve, "_is_default", False) and field.is_basic_field and field.default_resolver is not None:
        read, name = field.default_resolver, field.python_name
    elif PREFETCHED in field.metadata and not field.extensions and not field.permission_classes:
        attribute, sentinel = field.metadata[PREFETCHED]
        read, name = _prefetched(sentinel), attribute
    elif _of_itself(field):
        assert field.base_resolver is not None
        read, name = _computed(field.base_resolver.wrapped_func), field.python_name
    else:
        return None  # a resolver of its own
    inner, non_null = _unwrap(field_def.type)
    if is_leaf_type(inner):
        return PlainLeaf(read, name, inner, non_null, SAME.get(inner))
    item_type: GraphQLOutputType | None = None
    if isinstance(inner, GraphQLList):
        item_type = inner.of_type
        inner, _ = _unwrap(inner.of_type)
    if not isinstance(inner, GraphQLObjectType):
        return None  # a list of lists or of leaves, an interface or union
    definition = (inner.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if inner.is_type_of is not None and getattr(definition, "is_type_of", True) is not None:
        return None  # a type checked at run time by a check of its own, which may read the resolve info
    return PlainObjects(read, name, inner, field_def.type, item_type, inner.is_type_of)


_MISSING: Any = object()


class _Unexpected(Exception):
    """What a render does not answer itself: graphql-core's path answers the object instead."""


# A render's step: (response name, kind, read, attribute, what the kind checks, the leaf's coercion or the render of
# the object(s)); for _TYPENAME, `read` is the type's name.
Step = tuple[str, int, Any, Any, Any, Any]
Render = Callable[[Any], dict[str, Any]]
_TYPENAME, _LEAF, _OBJECT, _OBJECTS = range(4)


def _settled(is_awaitable: Callable[[Any], bool]) -> tuple[set[type], Callable[[Any], bool]]:
    """(types known not to be awaitable, a check that learns them): whether an object with no run-time type
    check of its own is a value rather than something to await. Whether an object can be awaited follows from
    its type, but for a generator (a generator-based coroutine is one); the types met are few (Address, an edge,
    a page's info), so after the first of each type it costs a set lookup."""
    known: set[type] = set()

    def settled(value: Any) -> bool:
        if is_awaitable(value):
            return False
        if type(value) is not GeneratorType:
            known.add(type(value))
        return True

    return known, settled


def _renderer(steps: tuple[Step, ...], settled: tuple[set[type], Callable[[Any], bool]]) -> Render:
    """An object's plain selection as one function: each field read and checked as PlainFieldExecutor.execute_field
    would read and check it, without a path, a field lookup or a call per field. Whatever it would hand to
    graphql-core's path (an error, a null where none may be, a value to coerce that does not, an object not of
    the field's type, something to await, a list that is not a list) raises, and the object takes that path."""

    known, learn = settled

    def render(source: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind, read, attribute, spec, inner in steps:
            if kind == _LEAF:
                value = read(source, attribute)
                if type(value) is spec[0]:  # its own coercion (a str of a String, a bool of a Boolean)
                    out[name] = value
                elif value is None:
                    if spec[1]:
                        raise _Unexpected
                    out[name] = None
                else:
                    coerced = inner(value)
                    if coerced is None or coerced is Undefined:
                        raise _Unexpected
                    out[name] = coerced
            elif kind == _TYPENAME:
                out[name] = read
            elif kind == _OBJECT:
                value = read(source, attribute)
                non_null, check = spec
                if value is None:
                    if non_null:
                        raise _Unexpected
                    out[name] = None
                elif check(value, None) is True if check is not None else type(value) in known or learn(value):
                    out[name] = inner(value)
                else:
                    raise _Unexpected
            else:
                value = read(source, attribute)
                non_null, items_non_null, check = spec
                if value is None:
                    if non_null:
                        raise _Unexpected
                    out[name] = None
                    continue
                if type(value) is not list:
                    raise _Unexpected
                items: list[Any] = []
                for item in value:
                    if item is None:
                        if items_non_null:
                            raise _Unexpected
                        items.append(None)
                    elif check(item, None) is True if check is not None else type(item) in known or learn(item):
                        items.append(inner(item))
                    else:
                        raise _Unexpected
                out[name] = items
        return out

    return render


# The renders of an operation's selections, shared by its executions: by the selection's object type, whether
# an extension wraps every resolver, and its field nodes' identities; each with those nodes, kept alive so that
# their identities are not reused while the entry lives.
SharedRenders = dict[tuple[Any, ...], tuple[tuple[Any, ...], "Render | None"]]
# Per operation node while it lives (gateway.identity): its shared renders, or None when its selections may depend
# on the variables (a directive or fragment variables).
_OPERATIONS: ByIdentity[OperationDefinitionNode, SharedRenders | None] = ByIdentity()
# Per is_awaitable predicate: the types known not to be awaitable, and the check that learns them (_settled).
_SETTLED: dict[Callable[[Any], bool], tuple[set[type], Callable[[Any], bool]]] = {}


class _FindsVariableSelections(Visitor):
    """Finds what makes a selection depend on the variables: a directive (@skip, @include, @defer, or any other),
    or fragment arguments."""

    found = False

    def enter_directive(self, *_args: Any) -> Any:
        self.found = True
        return BREAK

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_args: Any) -> Any:
        if getattr(node, "arguments", None):
            self.found = True
            return BREAK
        return None

    def enter_fragment_definition(self, node: Any, *_args: Any) -> Any:
        if getattr(node, "variable_definitions", None):
            self.found = True
            return BREAK
        return None


def _varies(operation: OperationDefinitionNode, fragments: Mapping[str, Any]) -> bool:
    for node in (operation, *(f.definition for f in fragments.values())):
        finder = _FindsVariableSelections()
        visit(node, finder)
        if finder.found:
            return True
    return False


def _operation_renders(operation: OperationDefinitionNode, fragments: Mapping[str, Any]) -> SharedRenders | None:
    """The renders shared by every execution of `operation` (None when its selections may vary with the
    variables). Its fragments are its document's: the same for every execution of the operation."""
    return _OPERATIONS.kept(operation, lambda: None if _varies(operation, fragments) else {})


def _kept(cache: dict[int, tuple[Any, GraphQLObjectType, Any]], key: Any, parent_type: GraphQLObjectType) -> Any:
    """What `cache` keeps for a selection graphql-core collected once per parent type and hands to every object of a
    page, by the selection's identity and the parent type (stored with the selection, so that its identity is not
    reused meanwhile); _MISSING when nothing is kept yet."""
    entry = cache.get(id(key))
    if entry is not None and entry[0] is key and entry[1] is parent_type:
        return entry[2]
    return _MISSING


class PlainFieldExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor; plain fields answer without graphql-core's field machinery (see the module)."""

    _plain_fields: dict[int, tuple[Any, GraphQLObjectType, Plain | None]] | None = None
    _plans: dict[int, tuple[Any, GraphQLObjectType, Plan]] | None = None
    _renderers: dict[int, tuple[Any, GraphQLObjectType, Render | None]] | None = None
    # The operation's renders shared by its executions (_operation_renders); False until looked up.
    _shared_renders: SharedRenders | bool | None = False

    def build_per_event_executor(self, payload: Any) -> Any:
        """graphql-core's copy for one subscription event, with memos of its own.

        The memos (graphql-core's collected subfields, and `_plans` and `_plain_fields` here) are keyed by the
        identity of the selections an execution collects, and keep those selections alive so that the identity
        is not reused. Every execution of the operation collects its root fields anew, so an event's selections
        are never met again by the next event's execution; graphql-core's copy shares its memo with the
        subscription's executor, which lives as long as the subscription, so every event rendered added its
        selections to it for good (a gateway with 40 subscribers of one token held 7,800 more objects after 113
        messages). A memo per event still serves what it is for: the items of a list within one event."""
        executor = cast("PlainFieldExecutor", super().build_per_event_executor(payload))
        executor._relevant_sub_fields = {}
        executor._plain_fields = None
        executor._plans = None
        executor._renderers = None
        return executor

    def collect_and_execute_subfields(
        self,
        return_type: GraphQLObjectType,
        field_details_list: Any,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's, with an object whose whole selection is plain rendered by its `Render` (made once per
        selection); anything the render does not expect (an error, a null where none may be, a value to await
        or of another type) runs graphql-core's path for that object, which reads it again and reports it."""
        if position_context is None:
            render = self._render(return_type, field_details_list)
            if render is not None:
                try:
                    return render(result)
                except Exception:  # noqa: S110 (the path below answers, or reports the error)
                    pass
        return super().collect_and_execute_subfields(return_type, field_details_list, path, result, position_context)

    def _render(self, object_type: GraphQLObjectType, field_details_list: Any) -> Render | None:
        """The render of an object's selection when all of it is plain, down to the leaves; None otherwise.
        Made once per selection (_kept)."""
        renderers = self._renderers
        if renderers is None:
            renderers = self._renderers = {}
        render: Render | None = _kept(renderers, field_details_list, object_type)
        if render is _MISSING:
            shared = self._shared_renders
            if shared is False:
                shared = self._shared_renders = _operation_renders(self.operation, self.fragments)
            if isinstance(shared, dict):
                nodes = tuple(d.node for d in field_details_list)
                key = (object_type, self._wrapped(), *map(id, nodes))
                found = shared.get(key)
                if found is None:
                    found = shared[key] = (nodes, self._make_render(object_type, field_details_list))
                render = found[1]
            else:
                render = self._make_render(object_type, field_details_list)
            renderers[id(field_details_list)] = (field_details_list, object_type, render)
        return render

    def _wrapped(self) -> bool:
        """Whether an extension wraps every resolver (graphql middleware): the short path is off then."""
        manager = self.middleware_manager
        return manager is not None and bool(manager.middlewares)

    def _make_render(self, object_type: GraphQLObjectType, field_details_list: Any) -> Render | None:
        grouped_field_set, new_defer_usages, forbidden = self.collect_subfields(object_type, field_details_list)
        if new_defer_usages or forbidden:
            return None
        steps: list[Step] = []
        for response_name, fields in grouped_field_set.items():
            node = fields[0].node
            if node.name.value == "__typename":
                if any(d.node.directives for d in fields):
                    return None
                steps.append((response_name, _TYPENAME, object_type.name, None, None, None))
                continue
            plain = self._plain_field(object_type, fields)
            if plain is None:
                return None
            if isinstance(plain, PlainLeaf):
                coerce = plain.leaf.coerce_output_value
                steps.append((response_name, _LEAF, plain.read, plain.name, (plain.same, plain.non_null), coerce))
                continue
            inner = self._render(plain.object_type, fields)
            if inner is None:
                return None
            non_null = isinstance(plain.field_type, GraphQLNonNull)
            if plain.item_type is None:
                steps.append((response_name, _OBJECT, plain.read, plain.name, (non_null, plain.check), inner))
            else:
                items_non_null = isinstance(plain.item_type, GraphQLNonNull)
                kind = (non_null, items_non_null, plain.check)
                steps.append((response_name, _OBJECTS, plain.read, plain.name, kind, inner))
        settled = _SETTLED.get(self.is_awaitable)
        if settled is None:
            settled = _SETTLED[self.is_awaitable] = _settled(self.is_awaitable)
        return _renderer(tuple(steps), settled)

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's execute_fields, with the plain leaves of the selection answered in the loop itself: a
        value that is its own coercion (a str of a String, a bool of a Boolean) or an allowed null is stored as
        it is, without a path, a call of execute_field or an awaitable check. Any other value, and every other
        field, goes to execute_field as before (which reads the leaf again, and coerces or reports it)."""
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        is_awaitable = self.is_awaitable
        try:
            for response_name, field_details_list, leaf in self._plan(parent_type, grouped_field_set):
                if leaf is not None:
                    try:
                        value = leaf.read(source_value, leaf.name)
                    except Exception:  # execute_field reports it as graphql-core does
                        value = Undefined
                    if type(value) is leaf.same or (value is None and not leaf.non_null):
                        results[response_name] = value
                        continue
                field_path = Path(path, response_name, parent_type.name)
                result = self.execute_field(parent_type, source_value, field_details_list, field_path, position_context)
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:  # settle what other fields started: they may fail too
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return self._await_fields(results, awaitable_fields)

    async def _await_fields(self, results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
        if len(awaitable_fields) == 1:
            field = awaitable_fields[0]
            results[field] = await results[field]
        else:
            awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
            results.update(zip(awaitable_fields, awaited, strict=True))
        return results

    def _plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> Plan:
        """The selection's fields with the leaves the loop answers, made once per selection (_kept)."""
        plans = self._plans
        if plans is None:
            plans = self._plans = {}
        plan: Plan = _kept(plans, grouped_field_set, parent_type)
        if plan is _MISSING:
            plan = []
            for response_name, field_details_list in grouped_field_set.items():
                plain = self._plain_field(parent_type, field_details_list)
                leaf = plain if isinstance(plain, PlainLeaf) and plain.same is not None else None
                plan.append((response_name, field_details_list, leaf))
            plans[id(grouped_field_set)] = (grouped_field_set, parent_type, plan)
        return plan

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
            except Exception:  # graphql-core's path below reports it as it always did
                value = Undefined
            if isinstance(plain, PlainLeaf):
                if value is None and not plain.non_null:
                    return None
                if value is not None and value is not Undefined:
                    try:
                        coerced = plain.leaf.coerce_output_value(value)
                    except Exception:  # as above
                        coerced = None
                    if coerced is not None and coerced is not Undefined:
                        return coerced
            elif value is None:
                if not isinstance(plain.field_type, GraphQLNonNull):
                    return None
            elif value is not Undefined:
                if plain.item_type is None:
                    if not self.is_awaitable(value) and (plain.check is None or plain.check(value, None) is True):
                        return self._complete_object(plain, field_details_list, path, value, position_context)
                elif self._completes(plain, value):
                    return self._complete_objects(plain, field_details_list, path, value, position_context)
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def _plain_field(self, parent_type: GraphQLObjectType, field_details_list: Any) -> Plain | None:
        """How to answer the field, None when it takes graphql-core's path; found once per selection (_kept)."""
        known = self._plain_fields
        if known is None:
            known = self._plain_fields = {}
        plain: Plain | None = _kept(known, field_details_list, parent_type)
        if plain is _MISSING:
            node = field_details_list[0].node
            plain = None
            if not self._wrapped() and not node.arguments and not any(d.node.directives for d in field_details_list):
                plain = plain_field(self.schema, parent_type, node.name.value)
            known[id(field_details_list)] = (field_details_list, parent_type, plain)
        return plain

    def _completes(self, plain: PlainObjects, value: Any) -> bool:
        """Whether the short path can complete this list: a list of objects (nulls only where allowed)."""
        if type(value) is not list:
            return False
        items_non_null = isinstance(plain.item_type, GraphQLNonNull)
        is_awaitable = self.is_awaitable
        check = plain.check
        return all(
            (
                not items_non_null
                if item is None
                else not is_awaitable(item) and (check is None or check(item, None) is True)
            )
            for item in value
        )

    def _complete_object(self, plain: PlainObjects, fields: Any, path: Path, value: Any, position: Any) -> Any:
        try:
            done = self.collect_and_execute_subfields(plain.object_type, fields, path, value, position)
        except Exception as error:  # handled as graphql-core handles a field's error
            self.handle_field_error(error, plain.field_type, fields, path)
            return None
        if self.is_awaitable(done):
            return self._settle(done, plain.field_type, fields, path)
        return done

    def _complete_objects(self, plain: PlainObjects, fields: Any, path: Path, items: list[Any], position: Any) -> Any:
        item_type = plain.item_type
        assert item_type is not None
        done: list[Any] = []
        pending: list[int] = []
        try:
            for index, item in enumerate(items):
                if item is None:
                    done.append(None)
                    continue
                item_path = path.add_key(index, None)
                try:
                    one = self.collect_and_execute_subfields(plain.object_type, fields, item_path, item, position)
                except Exception as error:  # an item's error nulls the item, or raises for a non-null one
                    self.handle_field_error(error, item_type, fields, item_path)
                    one = None
                if self.is_awaitable(one):
                    pending.append(index)
                    one = self._settle(one, item_type, fields, item_path)
                done.append(one)
        except Exception as error:  # a non-null item's error nulls the field, or raises further
            if pending:
                self.settle_in_background([done[i] for i in pending])
            self.handle_field_error(error, plain.field_type, fields, path)
            return None
        if pending:
            return self._gather(done, pending, plain.field_type, fields, path)
        return done

    async def _settle(self, awaitable: Awaitable[Any], graphql_type: GraphQLOutputType, fields: Any, path: Path) -> Any:
        try:
            return await awaitable
        except Exception as error:  # as graphql-core handles an awaited field's error
            self.handle_field_error(error, graphql_type, fields, path)
            return None

    async def _gather(
        self, done: list[Any], pending: list[int], field_type: GraphQLOutputType, fields: Any, path: Path
    ) -> Any:
        try:
            settled = await gather_with_cancel(*(done[i] for i in pending))
        except Exception as error:  # a non-null item's error nulls the field, or raises further
            self.handle_field_error(error, field_type, fields, path)
            return None
        for index, value in zip(pending, settled, strict=True):
            done[index] = value
        return done
