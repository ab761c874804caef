"""One router per resource.

Each router carries its full path (`API_PREFIX` included), and `create_app` adds its routes
to the app as they are instead of through `include_router`. FastAPI (0.165) wraps an
included router so that each app builds every route's context again on its first request:
85-90 ms for our hundred routes, against 4 ms for routes built once per process, at import,
and shared by every app; routing a request takes 0.92x the time (`bench/app_routes.py`,
one run, the apps otherwise identical). A `cosmo serve`'s first request no longer pays it,
nor does each test's app.
"""

API_PREFIX = "/api/v1"
