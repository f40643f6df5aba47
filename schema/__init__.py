"""inboxql's shared data model: tables, the change log and the one write API."""

IS_INBOXQL_SCHEMA = True
