"""`GET /debug/profile`: what the always-on sampler saw in the last N seconds, as a flame graph.

    GET /debug/profile?seconds=60&format=svg|collapsed|speedscope

It answers at once from the sampler's rolling window (ops.sampler): it does not start sampling for N seconds, so
the request costs a render, not N seconds of a connection, and it shows what happened *before* someone asked
(the stall that made the operator look). `seconds` is 1 to the window (INBOXQL_PROFILE_WINDOW_SECONDS, 600);
whole buckets are returned, so up to one bucket (10 s) more than asked; the `X-Profile-Samples` and
`X-Profile-Seconds` headers say what the answer covers. A process whose sampler is off (INBOXQL_PROFILE_HZ=0)
answers 503.

Both processes serve it: the gateway beside /graphql (behind its own guard: loopback or an operator token), and
the sync process on its operator port, through `profile_routes(sampler)`, whose default guard admits loopback
clients only (the sync process has no tokens of its own). Errors are JSON in the gateway's shape,
`{"errors": [{"message", "extensions": {"code"}}]}`, with the same codes.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ops.flame import FORMATS, MEDIA_TYPES, render
from ops.sampler import Sampler

PATH = "/debug/profile"
DEFAULT_SECONDS = 60.0
# The SVG is served from the process's own origin: it may carry inline styles, and nothing else may run or load.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"

Guard = Callable[[Request], Awaitable[Response | None]]


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


def is_loopback(host: str | None) -> bool:
    """Whether a client address (as the ASGI server reports it) is this machine's loopback."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


async def loopback_only(request: Request) -> Response | None:
    """The sync process's guard: None (allowed) for a loopback client, a 403 for anyone else."""
    if is_loopback(request.client.host if request.client else None):
        return None
    return error(403, "FORBIDDEN", "the profile is served to this machine's loopback clients only")


async def profile_response(sampler: Sampler, request: Request) -> Response:
    """The profile the query string asks for (no guard: callers guard)."""
    fmt = request.query_params.get("format", "svg")
    if fmt not in FORMATS:
        return error(400, "BAD_USER_INPUT", f"format must be one of {', '.join(FORMATS)}")
    window = sampler.config.window_seconds
    try:
        seconds = float(request.query_params.get("seconds", min(DEFAULT_SECONDS, window)))
    except ValueError:
        return error(400, "BAD_USER_INPUT", "seconds must be a number")
    if not 1 <= seconds <= window:
        return error(400, "BAD_USER_INPUT", f"seconds must be between 1 and {window:g} (the sampler's window)")
    if not sampler.enabled:
        return error(503, "UNAVAILABLE", "the profiler is off in this process (INBOXQL_PROFILE_HZ=0)")
    if not sampler.running:
        return error(503, "UNAVAILABLE", "the profiler is not running (the process is starting or stopping)")
    profile = sampler.profile(seconds)
    subtitle = (
        f"{profile.samples} samples over the last {profile.seconds:.0f} s at {profile.hz:g} Hz"
        f" (asked for {seconds:g} s); root at the top, width = share of samples, hover for counts"
    )
    # Rendering a large window takes tens of milliseconds: in a thread, so the loop's other work interleaves.
    body = await asyncio.to_thread(render, profile.stacks, fmt, "inboxql profile", subtitle)
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _CSP,
        "X-Profile-Samples": str(profile.samples),
        "X-Profile-Seconds": f"{profile.seconds:.1f}",
    }
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


def profile_routes(sampler: Sampler, guard: Guard = loopback_only) -> list[Route]:
    """`GET /debug/profile` for an operator server (the sync process's `--metrics-port`), behind `guard`."""

    async def endpoint(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        return await profile_response(sampler, request)

    return [Route(PATH, endpoint, methods=["GET"], name="profile")]
