"""The GraphQL gateway: reads the mirror through Strawberry on Starlette (see gateway.app.create_app)."""
