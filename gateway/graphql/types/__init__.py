"""The GraphQL object types, one module per family; relations go through the request's loaders.

```
relay       the Node interface and keyset connections (Edge, PageInfo, Connection)
fields      typed field decorators and small helpers every type uses
accounts    Account, SyncProgress
folders     Folder, Label
messages    Message, Attachment, Address, and Thread (each refers to the other)
nodes       every Node type by name (node(id:), a change's object)
changes     Change, ChangePage, and the change log's enums under their GraphQL names
webhooks    Webhook, WebhookDelivery, CreatedWebhook
actions     Action (the write-back queue), ActionState, and the mutation payloads
outbox      OutboxEntry, OutboxState, OutboxConnection, and the sendMessage and cancelSend payloads
```
"""
