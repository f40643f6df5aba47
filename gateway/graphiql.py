"""GraphiQL served from the app itself, so the explorer works on a machine without internet.

Strawberry's page loads React and GraphiQL from a public CDN. Ours loads the same npm releases from
``gateway/static/graphiql/``, which ``scripts/vendor-graphiql`` fills at build time (they are not committed).
When they are missing the page says so and how to fix it, instead of hanging on "Loading...".

A link may pre-fill the editors: ``/graphql#headers=JSON&q=QUERY``. The headers (which carry the API token)
go in the URL's fragment, which the browser never sends to a server, so no access log or proxy sees the
token; the page reads it, then takes it out of the address bar and the history entry (``replaceState``).
``q`` may also be in the query string (``/graphql?q=QUERY``); a ``headers`` query parameter is not read (a
token there has been sent to the server, whose access log writes it redacted: gateway.server) and is taken
out of the address bar too. Without a token in the link, paste it into GraphiQL's headers editor.

Subscriptions run over graphql-transport-ws on the same path with graphql-ws's own browser client: the page sends
the Authorization of GraphiQL's headers editor in connection_init as ``{"authorization": "Bearer ..."}`` (the way
the gateway authenticates a socket) and does not retry a socket the gateway refused, so GraphiQL shows the refusal.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import HTMLResponse

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
STATIC_URL = "/graphiql/static"
ASSETS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "js.cookie.min.js",
    "graphiql.min.js",
    "graphiql.min.css",
    "plugin-explorer.umd.js",
    "plugin-explorer.css",
    "graphql-ws.min.js",
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>inboxql GraphiQL</title>
<link rel="stylesheet" href="{static}/graphiql.min.css">
<link rel="stylesheet" href="{static}/plugin-explorer.css">
<style>body {{ margin: 0; }} #graphiql {{ height: 100vh; }}</style>
</head>
<body>
<div id="graphiql">Loading…</div>
<script src="{static}/react.production.min.js"></script>
<script src="{static}/react-dom.production.min.js"></script>
<script src="{static}/js.cookie.min.js"></script>
<script src="{static}/graphiql.min.js"></script>
<script src="{static}/plugin-explorer.umd.js"></script>
<script src="{static}/graphql-ws.min.js"></script>
<script>
(function () {{
  var params = new URLSearchParams(window.location.search);
  // The token travels in the fragment only: never sent to the server, and out of the history at once.
  var fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  var url = window.location.origin + window.location.pathname;
  if (window.location.hash || params.has("headers")) {{
    params.delete("headers");
    var search = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  }}
  // Subscriptions: graphql-transport-ws on the same path, ws:// beside http:// and wss:// beside https://.
  var wsUrl = url.replace(/^http/, "ws");
  var authorization = null;  // the Authorization of the headers editor, at the latest run
  var wsClient = null;
  var fetchWith = null;  // GraphiQL's own fetcher: HTTP for queries and mutations, wsClient for subscriptions

  function authorizationOf(headers) {{
    var found = null;
    Object.keys(headers || {{}}).forEach(function (name) {{
      if (name.toLowerCase() === "authorization" && typeof headers[name] === "string") found = headers[name];
    }});
    return found;
  }}

  function connect() {{
    if (wsClient !== null) wsClient.dispose();
    wsClient = graphqlWs.createClient({{
      url: wsUrl,
      // Read when the socket (re)connects; the gateway authenticates the socket by this connection_init payload.
      connectionParams: function () {{
        return authorization === null ? {{}} : {{ authorization: authorization }};
      }},
      // 4403: the gateway refused the token. Retrying cannot help: let GraphiQL show the refusal at once.
      shouldRetry: function (e) {{
        return typeof e === "object" && e !== null && "code" in e && e.code !== 4403;
      }},
    }});
    fetchWith = GraphiQL.createFetcher({{ url: url, wsClient: wsClient }});
  }}

  function fetcher(graphQLParams, opts) {{
    var next = authorizationOf(opts && opts.headers);
    // A changed token gets a socket of its own (GraphiQL runs one operation at a time, so none is cut short).
    if (fetchWith === null || (next !== authorization && graphQLParams.operationName !== "IntrospectionQuery")) {{
      authorization = next;
      connect();
    }}
    return fetchWith(graphQLParams, opts);
  }}

  var explorer = GraphiQLPluginExplorer.explorerPlugin();
  function App() {{
    return React.createElement(GraphiQL, {{
      fetcher: fetcher,
      plugins: [explorer],
      defaultQuery:
        fragment.get("q") || params.get("q") || "{{ accounts(first: 10) {{ edges {{ node {{ id address }} }} }} }}",
      headers: fragment.get("headers") || undefined,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
    }});
  }}
  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(App));
}})();
</script>
</body>
</html>
"""

_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GraphiQL is not installed</title></head>
<body><h1>GraphiQL is not installed</h1>
<p>The GraphiQL assets are missing from <code>{path}</code> ({missing}).
Run <code>scripts/vendor-graphiql</code> once (it installs them from npm) and reload.</p>
<p>GraphQL itself works: POST queries to this URL.</p></body></html>
"""


def missing_assets() -> list[str]:
    return [name for name in ASSETS if not (STATIC_DIR / name).is_file()]


def graphiql_page() -> HTMLResponse:
    missing = missing_assets()
    if missing:
        return HTMLResponse(_MISSING.format(path=STATIC_DIR, missing=", ".join(missing)), status_code=503)
    return HTMLResponse(_PAGE.format(static=STATIC_URL))
