# inboxql: the sync core and the GraphQL gateway in one image.
#   docker build -t inboxql .
#   docker run --rm -e INBOXQL_DATABASE_URL=... -e INBOXQL_REDIS_URL=... -e INBOXQL_SECRET_KEY=... inboxql sync
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 inboxql
WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY alembic ./alembic
COPY mime ./mime
COPY schema ./schema
COPY synccore ./synccore
COPY gateway ./gateway
COPY inboxql ./inboxql
RUN PIP_CONSTRAINT=constraints.txt pip install -e . && python -c "import mime, schema, synccore, inboxql; assert schema.IS_INBOXQL_SCHEMA"
USER inboxql
EXPOSE 8000
ENTRYPOINT ["inboxql"]
CMD ["sync"]
