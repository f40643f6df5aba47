// Follows a subscription with the npm graphql-ws client (over `ws`) and prints each result as one JSON line.
// usage: node subscribe.mjs WS_URL TOKEN QUERY VARIABLES_JSON COUNT
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, query, variables, count] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
});
let seen = 0;
const done = () => client.dispose().then(() => process.exit(0));
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
client.subscribe(
  { query, variables: JSON.parse(variables) },
  {
    next: (result) => {
      process.stdout.write(JSON.stringify(result) + "\n");
      if (++seen >= Number(count)) done();
    },
    error: (error) => {
      process.stdout.write(JSON.stringify({ clientError: String(error?.message ?? JSON.stringify(error)) }) + "\n");
      process.exit(2);
    },
    complete: () => done(),
  },
);
