// Runs graphql-http's GraphQL-over-HTTP server audits against a URL and prints the results as JSON.
// Usage: node audit.mjs URL   (INBOXQL_TOKEN, when set, is sent as a bearer token with every request)
import { auditServer } from "graphql-http";

const url = process.argv[2];
const token = process.env.INBOXQL_TOKEN;

function fetchWithToken(input, init = {}) {
  const headers = new Headers(init.headers || {});
  if (token) headers.set("authorization", `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

const results = await auditServer({ url, fetchFn: fetchWithToken });
const report = [];
for (const result of results) {
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== "ok") {
    entry.reason = result.reason;
    entry.httpStatus = result.response.status;
    entry.contentType = result.response.headers.get("content-type");
    entry.body = (await result.response.text()).slice(0, 500);
  }
  report.push(entry);
}
console.log(JSON.stringify(report));
