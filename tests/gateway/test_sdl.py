import pytest

from gateway.sdl import SDL_FILE, current_sdl, main


def test_schema_file_matches_the_code() -> None:
    assert SDL_FILE.read_text(encoding="utf-8") == current_sdl(), "the SDL is stale: run python -m gateway.sdl"


def test_check_mode_fails_on_a_stale_file(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = SDL_FILE.with_name("schema.graphql.stale-test")
    try:
        stale.write_text("type Query { old: Int }\n", encoding="utf-8")
        monkeypatch.setattr("gateway.sdl.SDL_FILE", stale)
        assert main(["--check"]) == 1
    finally:
        stale.unlink(missing_ok=True)
    monkeypatch.setattr("gateway.sdl.SDL_FILE", SDL_FILE)
    assert main(["--check"]) == 0


def test_schema_keeps_the_names_outside_checks_use() -> None:
    sdl = current_sdl()
    for expected in (
        "interface Node",
        "node(id: ID!): Node",
        "nodes(ids: [ID!]!): [Node]!",
        "from: [Address!]!",
        "malformed: Boolean!",
        "totalCount: Int!",
        "hasNextPage: Boolean!",
        "endCursor: String",
        "search(accountId: ID!, query: String!",
        "threads(accountId: ID!, filter: ThreadFilter",
        "messages(accountId: ID!, filter: MessageFilter",
        "updateMessages(input: UpdateMessagesInput!): UpdateMessagesPayload!",
        "moveMessages(input: MoveMessagesInput!)",
        "trashMessages(input: TrashMessagesInput!)",
        "restoreMessages(input: RestoreMessagesInput!)",
        "deleteMessages(input: DeleteMessagesInput!)",
        "createFolder(input: CreateFolderInput!)",
        "renameFolder(input: RenameFolderInput!)",
        "deleteFolder(input: DeleteFolderInput!)",
        "actions(accountId: ID!, ids: [ID!] = null, state: ActionState = null, first: Int = null, after: String",
        "type Action implements Node",
        "state: ActionState!",
        "idempotencyKey: String",
    ):
        assert expected in sdl, expected
