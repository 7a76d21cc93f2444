"""The viewer's routes: `make_app(db_path)` (a Starlette app) and `serve()` for `agentrl view`.

Read-only: the database is opened with `open_store(create=False, readonly=True)` and every
request reads in one short session (a consistent snapshot; a run may be writing meanwhile).
Stored text is untrusted: the Jinja2 environment autoescapes every template, stored values only
ever reach pages as template text or attributes, links carry them URL-encoded, and a
Content-Security-Policy allows only this app's own script and stylesheet.
"""

from __future__ import annotations

import shlex
import socket
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from agentrl.errors import AgentRLError, UserError
from agentrl.stats import fmt_rate
from agentrl.store.db import Store, open_store
from agentrl.viewer import charts, data

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


# -- links (stored text in a URL is always percent-encoded here) -------------------------------
def href(path: str, **params: Any) -> str:
    """`path?query` with the non-empty params URL-encoded (lists repeat the key)."""
    items = []
    for k, v in params.items():
        for x in v if isinstance(v, (list, tuple)) else [v]:
            if x is not None and x != "":
                items.append((k, str(x)))
    return path + ("?" + urlencode(items) if items else "")


def group_url(run_id: int, group_id: str) -> str:
    """/group/RUN/GROUP_ID with the id percent-encoded but its '/' kept; where the id has segments a
    browser would rewrite ('.', '..', empty), the query form /group/RUN?id=GROUP_ID."""
    segs = group_id.split("/")
    if group_id and all(seg not in ("", ".", "..") for seg in segs):
        return f"/group/{run_id}/" + quote(group_id, safe="/")
    return href(f"/group/{run_id}", id=group_id)


# -- formatting filters ----------------------------------------------------------------------
def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _rate(r: dict | None) -> str:
    """'37.5% [18.5, 61.4] (6/16)' of a `data.rate` dict."""
    return "-" if not r else f"{fmt_rate(r['won'], r['n'])} ({r['won']}/{r['n']})"


def _short(text, n: int = 120) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _signed(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, pct=_pct, rate=_rate, short=_short, signed=_signed)
    env.globals.update(href=href, group_url=group_url)
    return Jinja2Templates(env=env)


# -- request parsing -------------------------------------------------------------------------
def _int_param(request: Request, name: str, minimum: int | None = None) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if raw == "":
        return None
    try:
        v = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number") from None
    if minimum is not None and v < minimum:
        raise HTTPException(400, f"{name} must be at least {minimum}")
    return v


def _choice_param(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name, "").strip()
    if raw == "":
        return None
    if raw not in choices:
        raise HTTPException(400, f"{name} must be one of: {', '.join(choices)}")
    return raw


def episode_filter(request: Request) -> data.EpisodeFilter:
    return data.EpisodeFilter(
        split=_choice_param(request, "split", data.SPLITS),
        iteration=_int_param(request, "iteration"),
        outcome=_choice_param(request, "outcome", data.OUTCOMES),
        task=request.query_params.get("task", "").strip()[:300] or None,
        min_len=_int_param(request, "min_len", 0),
        max_len=_int_param(request, "max_len", 0),
        q=request.query_params.get("q", "")[:300] or None,
    )


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every response (pages, static files, errors)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- the app ---------------------------------------------------------------------------------
def make_app(db_path: str | Path, page_size: int = data.PAGE_SIZE) -> Starlette:
    """The viewer over the database at `db_path` (opened read-only now: a missing or foreign file is
    a UserError before anything is served)."""
    store: Store = open_store(db_path, create=False, readonly=True)
    templates = make_templates()
    db_abs = str(Path(db_path).resolve())
    credit_cache: dict = {}  # data.credit_stats' aggregates of runs whose advantages did not change

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        ctx.setdefault("db_path", db_abs)
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def read(fn: Callable, *args):
        with store.session() as s:
            return fn(s, *args)

    def not_found(what: str) -> HTTPException:
        return HTTPException(404, f"no {what} in {db_abs}")

    def runs_page(request: Request) -> Response:
        runs = read(data.list_runs)
        return render(request, "runs.html", runs=runs, title="runs")

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def load(s):
            run = data.get_run(s, run_id)
            if run is None:
                return None
            iters = data.iterations(s, run_id)
            return {
                "run": run,
                "iterations": iters,
                "checkpoints": data.checkpoints(s, run_id),
                "credit": data.credit_stats(s, run_id, iters, credit_cache),
            }

        d = read(load)
        if d is None:
            raise not_found(f"run {run_id}")
        metric_keys = sorted(
            {k for it in d["iterations"] for k, v in it["metrics"].items() if data._number(v) is not None}
        )
        wall_keys = sorted({k for it in d["iterations"] for k, v in it["wall"].items() if data._number(v) is not None})
        return render(
            request,
            "run.html",
            title=f"run {run_id}",
            charts=charts.run_charts(d["iterations"]),
            metric_keys=metric_keys,
            wall_keys=wall_keys,
            **d,
        )

    def compare_page(request: Request) -> Response:
        ids = []
        for raw in request.query_params.getlist("run"):
            try:
                ids.append(int(raw))
            except ValueError:
                raise HTTPException(400, "run must be a run id (a whole number)") from None
        ids = list(dict.fromkeys(ids))[:10]

        def load(s):
            out = []
            for rid in ids:
                run = data.get_run(s, rid)
                if run is None:
                    raise not_found(f"run {rid}")
                out.append((run, data.iterations(s, rid)))
            return out

        loaded = read(load) if ids else []
        chart_list = charts.compare_charts([(f"{r['name']} #{r['id']}", its) for r, its in loaded])
        colours = {r["id"]: charts.PALETTE[i % len(charts.PALETTE)] for i, (r, _) in enumerate(loaded)}
        return render(
            request,
            "compare.html",
            title="compare runs",
            runs=[r for r, _ in loaded],
            charts=chart_list,
            colours=colours,
        )

    def episodes_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        f = episode_filter(request)
        page = _int_param(request, "page", 1) or 1

        def load(s):
            run = data.get_run(s, run_id)
            if run is None:
                return None
            return {
                "run": run,
                "result": data.find_episodes(s, run_id, f, page, page_size),
                "iterations": data.episode_iterations(s, run_id),
            }

        d = read(load)
        if d is None:
            raise not_found(f"run {run_id}")
        params = f.params()
        base = f"/run/{run_id}/episodes"
        res = d["result"]
        pages = {
            "first": href(base, **params) if res["page"] > 1 else None,
            "prev": href(base, **params, page=res["page"] - 1) if res["page"] > 1 else None,
            "next": href(base, **params, page=res["page"] + 1) if res["page"] < res["pages"] else None,
            "last": href(base, **params, page=res["pages"]) if res["page"] < res["pages"] else None,
        }
        return render(
            request,
            "episodes.html",
            title=f"run {run_id} episodes",
            f=f,
            pages=pages,
            splits=data.SPLITS,
            outcomes=data.OUTCOMES,
            **d,
        )

    def episode_page(request: Request) -> Response:
        episode_id = request.path_params["episode_id"]
        d = read(data.get_episode, episode_id)
        if d is None:
            raise not_found(f"episode {episode_id}")
        replay = f"agentrl replay {episode_id} --db {shlex.quote(db_abs)}"
        return render(request, "episode.html", title=f"episode {episode_id}", replay=replay, **d)

    def group_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        group_id = request.path_params.get("group_id")
        if group_id is None:
            group_id = request.query_params.get("id")
            if group_id is None:
                raise HTTPException(400, "give the group id: /group/RUN/GROUP_ID or /group/RUN?id=GROUP_ID")
        d = read(data.get_group, run_id, group_id)
        if d is None:
            raise not_found(f"group '{_short(group_id, 200)}' in run {run_id}")
        return render(request, "group.html", title=f"group in run {run_id}", **d)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "") or ""
        return render(request, "error.html", status=status, title=str(status), status_code=status, message=detail)

    async def store_error(request: Request, exc: Exception) -> Response:
        status = 400 if isinstance(exc, UserError) else 503
        return render(request, "error.html", status=status, title=str(status), status_code=status, message=str(exc))

    async def server_error(request: Request, exc: Exception) -> Response:
        msg = f"unexpected {type(exc).__name__}: {exc}"
        return render(request, "error.html", status=500, title="500", status_code=500, message=msg)

    @asynccontextmanager
    async def lifespan(app):
        yield
        store.close()

    routes = [
        Route("/", runs_page, name="runs"),
        Route("/compare", compare_page, name="compare"),
        Route("/run/{run_id:int}", run_page, name="run"),
        Route("/run/{run_id:int}/episodes", episodes_page, name="episodes"),
        Route("/episode/{episode_id:int}", episode_page, name="episode"),
        Route("/group/{run_id:int}", group_page, name="group_q"),
        Route("/group/{run_id:int}/{group_id:path}", group_page, name="group"),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: http_error, AgentRLError: store_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.store = store
    return app


# -- serving ---------------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (port 0: a free one); UserError when that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host}: {e.strerror or e}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def serve(db_path: str | Path, host: str = "127.0.0.1", port: int = 8000, echo: Callable[[str], None] = print) -> None:
    """Serve the viewer with uvicorn until interrupted."""
    import uvicorn

    app = make_app(db_path)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    echo(f"agentrl view: {db_path} (read-only) at http://{shown}:{sock.getsockname()[1]}/ — Ctrl-C stops")
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: listening on {host}: anyone who can reach this machine on that port can read the runs")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C is how a server stops: uvicorn shut down cleanly and re-raised it
        echo("agentrl view: stopped")
