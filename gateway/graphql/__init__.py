"""The GraphQL schema: what clients see, and how it reads the mirror.

```
schema          the root (Query, Mutation, Subscription) and the extensions every operation runs through
query           the root Query: lists of an account's objects (keyset connections), search, node lookups, and
                the operator's `managedAccounts`
mutations/      the root Mutation, one class per area (messages, folders, drafts, sending, webhooks, operator);
                writes and composing: what they share
subscriptions   the root Subscription: the change feed, live, and thin filters over it
changes         the delta feed (`changes`, `changesCursor`): a page of the change log after a cursor
context         what one request carries (viewer, connection, loaders, the process's Services), and `Info`
loaders         the request's database connection (Reader) and its DataLoaders
filters         filter inputs and the SQL conditions they become
searchquery     the search box's language: text to a tree (pure)
search          a search's tree as SQL conditions (full text and operators) and its relevance
pages           keyset pagination
executor        Strawberry's executor with a short path for plain fields (columns, objects held by their parent)
persisted       persisted queries: documents registered by their SHA-256, run by their hash
types/          the object types: thin, typed, built from rows
```

Transport (gateway.http, gateway.sse, gateway.downloads) and workers (gateway.fanout, gateway.delivery) live
one floor up and import from here. From there, this package takes only the renderer the schema executes
subscriptions with (gateway.render), the webhook URL check (gateway.delivery.check_url), the login checks of the
operator API (gateway.logins), the codec of ids and
cursors (gateway.ids), errors, config and the Services type. This package's `__init__` imports nothing, so
that importing one module of it never loads the whole schema.
"""
