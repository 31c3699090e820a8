"""The bench page and its JSON API (docs/bench-page.md), served by `reflash run` as one of the station's tasks.

    server         the listening socket (loopback, or TLS), uvicorn under the station's TaskGroup, a prompt stop
    application    the Starlette app: routes, the security headers, who is asking (session cookie or API token)
    sessions       server-side sessions of signed-in operators: random ids, idle and absolute expiry, CSRF tokens
    bench_actions  scan-in, dispatch, release, close: each through the store, as the signed-in operator
    order_view     one order at a glance (asked, received, done by outcome, dispatched, missing)
    openapi        the API's OpenAPI 3.1 document (docs/openapi.json), generated from the routes

Everything runs on the station's event loop and calls the store synchronously, as the bench does: no thread
touches the store.
"""

__all__: list[str] = []  # the station imports `station.web.server` when [web] is enabled
