"""`agentrl view`: a local, read-only web app over runs.db (ARCHITECTURE.md §2).

Server-rendered pages (Starlette + Jinja2, autoescaped everywhere; charts are inline SVG drawn
on the server, so the pages need no third-party JavaScript and nothing from the network):

- `app.py`: the routes, `make_app(db_path)`, and `serve()` (uvicorn) for the CLI.
- `data.py`: the queries the pages need, one short read-only session per request (SQLite WAL:
  the viewer reads while a run writes), paged with LIMIT/OFFSET; steps are loaded only for the
  one episode or group a page shows.
- `charts.py`: per-iteration curves as SVG geometry (numbers only; labels stay template text).

Importing this package needs none of the viewer extra (starlette, uvicorn, jinja2); `app.py` does.
"""
