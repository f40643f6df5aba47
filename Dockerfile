# inboxql: the sync core and the GraphQL gateway in one image, on Debian 12's own Python.
#
#   docker build -t inboxql .                                  # BASE: any Debian 12 image (see below)
#   python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > secret.key     # once; keep it
#   docker run -d -e INBOXQL_DATABASE_URL=... -e INBOXQL_REDIS_URL=... \
#       -v $PWD/secret.key:/var/lib/inboxql/secret.key inboxql sync
#   docker run -d -p 8000:8000 (the same -e and -v) inboxql gateway
#
# The image refuses to start without a secret key it can keep (INBOXQL_SECRET_KEY, or the key ring file mounted
# at /var/lib/inboxql/secret.key): one made inside a container is lost with it, and the stored passwords with it.
# For `inboxql secret rotate`, mount the directory instead (-v keys:/var/lib/inboxql), writable by uid 10001.
#
# BASE is a build argument because no registry serves images everywhere this is built: the tests build on a
# `debootstrap --variant=minbase bookworm` tree imported into podman. Nothing here needs more than Debian 12.
ARG BASE=debian:bookworm-slim

# --- build: a wheel with GraphiQL's files, installed with the pinned dependencies into a virtualenv -----------------
FROM ${BASE} AS build
# A build behind a TLS-intercepting proxy passes its CA bundle as a file inside the build (e.g. podman build
# --volume /etc/ssl/certs/ca-certificates.crt:/run/build-ca.pem:ro --build-arg BUILD_CA_BUNDLE=/run/build-ca.pem).
ARG BUILD_CA_BUNDLE=
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY . .
# GraphiQL's files come from the checkout when scripts/vendor-graphiql made them there (scripts/setup does), else
# npm makes them here from the same lockfile (setup.py runs the script): Debian's nodejs and npm are installed
# only then, and in this stage only (Debian's npm is a large install: most of the stage's time without the files).
RUN tools="python3 python3-venv ca-certificates"; \
    if [ -z "$(ls gateway/static/graphiql 2>/dev/null)" ]; then tools="$tools nodejs npm"; fi; \
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $tools >/dev/null \
    && rm -rf /var/lib/apt/lists/*
# constraints.txt pins every dependency (PIP_CONSTRAINT also reaches pip's isolated build of the wheel); a
# non-editable install builds the wheel, GraphiQL's files and the migrations included (setup.py).
RUN if [ -n "$BUILD_CA_BUNDLE" ]; then \
        export PIP_CERT="$BUILD_CA_BUNDLE" NPM_CONFIG_CAFILE="$BUILD_CA_BUNDLE"; fi \
    && python3 -m venv /opt/inboxql \
    && PIP_CONSTRAINT=/src/constraints.txt /opt/inboxql/bin/pip install -q --upgrade pip \
    && PIP_CONSTRAINT=/src/constraints.txt /opt/inboxql/bin/pip install -q /src \
    && /opt/inboxql/bin/python -c "import gateway.graphiql as g, schema.migrate; assert not g.missing_assets()"

# --- the image: Debian's python3 and the virtualenv, no compiler, no npm --------------------------------------------
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
# ca-certificates: IMAP and SMTP servers' TLS is verified against the system's CAs.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3 ca-certificates >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/inboxql --create-home inboxql
COPY --from=build /opt/inboxql /opt/inboxql
# The gateway listens on every address of the container (a published port reaches it); the key ring file is
# where a mounted key is looked for, and none is ever made here (INBOXQL_SECRET_KEY_REQUIRED).
ENV PATH=/opt/inboxql/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INBOXQL_GATEWAY_HOST=0.0.0.0 \
    INBOXQL_GATEWAY_PORT=8000 \
    INBOXQL_SECRET_KEY_FILE=/var/lib/inboxql/secret.key \
    INBOXQL_SECRET_KEY_REQUIRED=1
USER inboxql
WORKDIR /var/lib/inboxql
EXPOSE 8000
# The gateway's /healthz; the sync process is healthy while it runs (inboxql/healthcheck.py).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["python3", "-m", "inboxql.healthcheck"]
ENTRYPOINT ["inboxql"]
CMD ["sync"]
