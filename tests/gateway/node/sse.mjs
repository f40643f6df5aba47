// Follows a subscription with the npm graphql-sse client (distinct connections mode, Node's own fetch) and prints
// one JSON line when the stream is accepted, then each result as one JSON line.
// usage: node sse.mjs URL TOKEN QUERY VARIABLES_JSON COUNT   (COUNT 0: until killed)
import { createClient } from "graphql-sse";

const [url, token, query, variables, count] = process.argv.slice(2);
let cursor = null; // the newest change cursor seen: a reconnect resumes after it (gateway/sse.py, Last-Event-ID)
const client = createClient({
  url,
  // Runs before every connection attempt, so a retry asks for what came after the last event it saw.
  headers: () => ({
    authorization: `Bearer ${token}`,
    ...(cursor ? { "last-event-id": cursor } : {}),
  }),
  retryAttempts: 0,
});
const limit = Number(count) || Infinity;
let seen = 0;
const done = (code) => {
  client.dispose();
  process.exit(code);
};
client.subscribe(
  { query, variables: JSON.parse(variables) },
  {
    next: (result) => {
      const root = result.data ? Object.values(result.data)[0] : null;
      if (root && typeof root.cursor === "string") cursor = root.cursor;
      process.stdout.write(JSON.stringify(result) + "\n");
      if (++seen >= limit) done(0);
    },
    error: (error) => {
      process.stdout.write(JSON.stringify({ clientError: String(error?.message ?? JSON.stringify(error)) }) + "\n");
      done(2);
    },
    complete: () => done(0),
  },
  { connected: () => process.stdout.write(JSON.stringify({ connected: true }) + "\n") },
);
