"""Operations: what makes a running inboxql process observable. Both processes (the gateway and the sync core)
use it, and it imports nothing of the project (like `mime/` and `synccore/imap/`), so either may.

  watchdog   the blocking detector: a thread that logs the loop thread's stack when the loop stalls
  sampler    the always-on stack sampler (collapsed stacks in a rolling window, `account:ID` labels)
  flame      collapsed stacks as an SVG flame graph, speedscope JSON or collapsed text
  profile    `GET /debug/profile` (`profile_routes(sampler)` for an operator server, behind a guard)
  metrics    the Prometheus metrics of both processes, named `inboxql_*`
  server     the sync process's operator endpoint (`/metrics`, `/debug/profile`) on `--metrics-port`
"""
