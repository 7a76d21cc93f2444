"""`agentrl view`: the read-only web viewer's pages, filters, search, 404s and escaping of stored text.

Runs in-process through Starlette's TestClient on a small database written through the Store API
(`tests/viewer_db.py`). The browser-level checks are in test_viewer_browser.py (-m browser).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the viewer extra is not installed: pip install 'agentrl[viewer]'")
pytest.importorskip("jinja2", reason="the viewer extra is not installed: pip install 'agentrl[viewer]'")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")

from starlette.testclient import TestClient  # noqa: E402

from agentrl.errors import UserError  # noqa: E402
from agentrl.store import open_store  # noqa: E402
from agentrl.viewer import data  # noqa: E402
from agentrl.viewer.app import group_url, make_app  # noqa: E402
from tests import viewer_db  # noqa: E402
from tests.conftest import ROOT, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("viewer") / "runs.db"
    ids = viewer_db.build(path)
    return path, ids


@pytest.fixture(scope="module")
def client(db):
    with TestClient(make_app(db[0])) as c:
        yield c


def episode_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-episode-id="(\d+)"', html)]


def match_count(html: str) -> int:
    return int(re.search(r'<span id="match-count">(\d+)</span>', html).group(1))


def test_every_page_answers(client, db):
    _, ids = db
    run = ids["run"]
    pages = [
        "/",
        f"/run/{run}",
        f"/run/{ids['eval_run']}",
        f"/run/{run}/episodes",
        f"/episode/{ids['train'][0]}",
        f"/episode/{ids['error']}",
        group_url(run, ids["first_group"]),
        f"/compare?run={run}&run={ids['eval_run']}",
        "/compare",
        "/static/viewer.css",
        "/static/viewer.js",
        "/static/favicon.svg",
    ]
    for url in pages:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:500])
    assert "content-security-policy" in r.headers and "script-src 'self'" in r.headers["content-security-policy"]


def test_runs_page_lists_runs_with_intervals(client, db):
    html = client.get("/").text
    assert 'href="/run/1"' in html and "alpha" in html and "toy-pick" in html and "gigpo" in html
    # before (iteration 0: 1/4) -> after (iteration 2: 2/4), with Wilson intervals
    assert "25.0% [4.6, 69.9] (1/4)" in html
    assert "50.0% [15.0, 85.0] (2/4)" in html
    assert 'name="run" value="1"' in html and 'action="/compare"' in html


def test_run_page_has_curves_credit_checkpoints_and_recipe(client, db):
    html = client.get(f"/run/{db[1]['run']}").text
    assert html.count('<svg class="chart"') >= 6
    for title in ("Success rate", "Return", "Loss", "KL", "Clip fraction", "Entropy", "Gradient norm", "Wall time"):
        assert title in html
    assert re.search(r"<polyline class=\"line\" points=\"[\d.]+,[\d.]+ [\d.]+,[\d.]+", html)
    assert 'class="band"' in html  # the success panel's Wilson band
    # credit statistics per iteration and method: 6 episodes of 2..4 steps = 18 steps per iteration
    assert re.search(r"<td>gigpo</td><td class=\"num\">18</td>", html)
    assert re.search(r"<td>spa</td><td class=\"num\">18</td>", html)
    assert "iter-0002" in html and "credit: {method: gigpo}" in html


def test_compare_overlays_runs(client, db):
    _, ids = db
    html = client.get(f"/compare?run={ids['run']}&run={ids['eval_run']}").text
    assert "alpha #1" in html and "&lt;i&gt;evil&lt;/i&gt; [bold]run #2" in html
    assert '<svg class="chart"' in html
    assert client.get("/compare?run=1&run=999").status_code == 404
    assert client.get("/compare?run=x").status_code == 400


def test_filters_change_the_rows(client, db):
    _, ids = db
    base = f"/run/{ids['run']}/episodes"
    everything = episode_ids(client.get(base).text)
    assert len(everything) == 4 + 12 + 4 + 2 and everything == sorted(everything)
    evals = episode_ids(client.get(base + "?split=eval").text)
    assert len(evals) == 8 and set(evals) < set(everything)
    assert len(episode_ids(client.get(base + "?split=eval&iteration=2").text)) == 4
    won = client.get(base + "?outcome=won").text
    assert match_count(won) == 1 + 2 + 4 + 2  # eval it0, train it1, train it2, eval it2
    assert episode_ids(client.get(base + "?outcome=error").text) == [ids["error"]]
    lost = episode_ids(client.get(base + "?outcome=lost").text)
    assert ids["error"] not in lost and ids["xss"] in lost
    assert len(episode_ids(client.get(base + "?iteration=1").text)) == 6
    assert len(episode_ids(client.get(base + "?min_len=4").text)) == 4  # the k=2 train episodes (4 steps)
    assert len(episode_ids(client.get(base + "?max_len=1").text)) == 1  # the errored one
    task = episode_ids(client.get(base + "?task=seed-10").text)
    assert len(task) == 8  # toy/pick/seed-100..103 in two evals
    # a bad filter value is a 400 page, not a traceback
    assert client.get(base + "?split=nope").status_code == 400
    assert client.get(base + "?iteration=abc").status_code == 400
    assert client.get(base + "?min_len=-1").status_code == 400


def test_paging(db):
    path, ids = db
    with TestClient(make_app(path, page_size=5)) as c:
        base = f"/run/{ids['run']}/episodes?split=train"
        p1 = c.get(base).text
        p2 = c.get(base + "&page=2").text
        last = c.get(base + "&page=99").text  # past the end: the last page
        assert len(episode_ids(p1)) == 5 and len(episode_ids(p2)) == 5
        assert not set(episode_ids(p1)) & set(episode_ids(p2))
        assert episode_ids(p1)[-1] < episode_ids(p2)[0]
        assert "page 1 of 3" in p1 and "page 3 of 3" in last and len(episode_ids(last)) == 4
        assert "split=train&amp;page=2" in p1  # the next link keeps the filter


def test_text_search(client, db):
    _, ids = db
    base = f"/run/{ids['run']}/episodes"
    # "lantern" is in the Hall observation: every episode of 2+ steps
    lantern = episode_ids(client.get(base + "?q=lantern").text)
    assert ids["error"] not in lantern and len(lantern) == 4 + 12 + 4 + 1
    assert episode_ids(client.get(base + "?q=onerror").text) == [ids["xss"]]  # in an action
    assert episode_ids(client.get(base + "?q=%3Cscript%3E").text) == [ids["xss"]]
    # LIKE wildcards are literal: '100%' is in the Garden room only (3-step episodes and longer)
    pct = episode_ids(client.get(base + "?q=100%25").text)
    assert pct and all(i in lantern for i in pct) and len(pct) < len(lantern)
    assert episode_ids(client.get(base + "?q=%25%25").text) == []
    assert episode_ids(client.get(base + "?q=_").text) == []
    assert episode_ids(client.get(base + "?q=nothing-like-this").text) == []
    # search and filters combine
    assert len(episode_ids(client.get(base + "?q=lantern&split=eval&outcome=won").text)) == 3


def test_like_pattern_escapes_wildcards():
    assert data.like_pattern("a%b_c\\d") == "%a\\%b\\_c\\\\d%"


def test_episode_page(client, db):
    _, ids = db
    eid = ids["train"][2]  # group 0, sample 2: lost, 4 steps
    html = client.get(f"/episode/{eid}").text
    assert html.count('<tr class="turn') == 4
    assert "4 admissible" not in html and "3 admissible commands" in html
    assert "I will go north" in html  # the raw generation beside the action
    assert f"agentrl replay {eid} --db " in html and 'data-copy="replay-cmd"' in html
    assert "gigpo" in html and "spa" in html and "progress" in html  # both methods, and spa's signal
    assert html.count('<span class="bar">') == 4 * 3  # gigpo value, spa value, spa progress per turn
    assert re.search(r'href="/group/1/it1/0/toy/pick/seed-0"', html)
    errored = client.get(f"/episode/{ids['error']}").text
    assert "env worker died" in errored


def test_group_page_marks_step_groups(client, db):
    _, ids = db
    html = client.get(group_url(ids["run"], ids["first_group"])).text
    assert len(re.findall(r'<th class="ep-col" data-episode-id', html)) == 3
    # three rooms, cycled: t=0 Kitchen in all 3 episodes, t=1 Hall, t=2 Garden... -> S1, S2, S3
    labels = re.findall(r'data-step-group="(S\d+)"', html)
    assert set(labels) == {"S1", "S2", "S3"} and labels.count("S1") == 3 + 1  # t=0 x3, t=3 once
    assert "advantage shown: gigpo" in html
    store = open_store(db[0], create=False, readonly=True)
    with store.session() as s:
        g = data.get_group(s, ids["run"], ids["first_group"])
    store.close()
    sizes = {sg["label"]: sg["size"] for sg in g["step_groups"]}
    assert sizes == {"S1": 4, "S2": 3, "S3": 2}


def test_group_ids_with_special_characters(client, db):
    _, ids = db
    url = group_url(ids["run"], ids["xss_group"])
    assert url.startswith(f"/group/{ids['run']}?id=")  # '..' in the id: the query form
    r = client.get(url)
    assert r.status_code == 200
    assert "&lt;b&gt;g&lt;/b&gt;" in r.text and "<b>g</b>" not in r.text
    assert group_url(1, "it1/0/a b?c#d") == "/group/1/it1/0/a%20b%3Fc%23d"
    assert client.get(group_url(ids["run"], "it1/0/a b?c#d")).status_code == 404


def test_not_found_pages(client):
    for url in ("/run/999", "/run/999/episodes", "/episode/999999", "/group/1/no/such/group", "/group/999/x", "/nope"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "not found" in r.text and "Traceback" not in r.text
    assert client.get("/run/abc").status_code == 404
    assert client.get("/group/1").status_code == 400


def test_stored_text_is_escaped(client, db):
    _, ids = db
    html = client.get(f"/episode/{ids['xss']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; [/bold] &amp; [red]not markup[/]" in html
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "toy/&lt;script&gt;alert(3)&lt;/script&gt;" in html
    runs = client.get("/").text
    assert "&lt;i&gt;evil&lt;/i&gt; [bold]run" in runs and "<i>evil</i>" not in runs
    group = client.get(group_url(ids["run"], ids["xss_group"])).text
    assert "<script>alert" not in group and "&lt;script&gt;alert(1)&lt;/script&gt;" in group
    episodes = client.get(f"/run/{ids['run']}/episodes?q=%3Cscript%3E").text
    assert "<script>alert" not in episodes and 'value="&lt;script&gt;"' in episodes
    # the only scripts are the app's own file
    for page in (html, runs, group, episodes):
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/viewer.js" defer>']


def test_reads_what_a_writer_adds_meanwhile(tmp_path):
    path = tmp_path / "runs.db"
    ids = viewer_db.build(path)
    with TestClient(make_app(path)) as c:
        before = match_count(c.get(f"/run/{ids['run']}/episodes").text)
        viewer_db.write_loop(str(path), ids["run"], 3, sleep_s=0)
        assert match_count(c.get(f"/run/{ids['run']}/episodes").text) == before + 3


def test_the_database_is_opened_read_only(tmp_path, db):
    with pytest.raises(UserError, match="no database"):
        make_app(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    app = make_app(db[0])
    assert app.state.store.readonly


def test_cli_view_help(capsys):
    code, out, _ = run_cli(["view", "--help"], capsys)
    assert code == 0 and "--port" in out and "--host" in out and "127.0.0.1" in out


def test_cli_view_without_the_extra(monkeypatch, capsys, db):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` raises ImportError
    code, out, err = run_cli(["view", "--db", str(db[0])], capsys)
    assert code == 2
    assert err == "error: agentrl view needs the viewer extra: pip install 'agentrl[viewer]'\n"


def test_cli_view_bad_database_and_port(tmp_path, capsys, db):
    code, _, err = run_cli(["view", "--db", str(tmp_path / "none.db")], capsys)
    assert code == 2 and err.startswith("error: no database at") and err.count("\n") == 1
    import socket

    with socket.socket() as s:  # a port in use is a one-line error too
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        code, _, err = run_cli(["view", "--db", str(db[0]), "--port", str(s.getsockname()[1])], capsys)
    assert code == 2 and "cannot listen on 127.0.0.1:" in err and err.count("\n") == 1


def test_templates_and_static_files_are_package_data():
    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agentrl"]
    pkg = ROOT / "agentrl"
    shipped = {p for pat in patterns for p in pkg.glob(pat)}
    viewer = [p for p in (pkg / "viewer").rglob("*") if p.is_file() and p.suffix in (".html", ".css", ".js", ".svg")]
    assert viewer and all(p in shipped for p in viewer), sorted(str(p) for p in viewer if p not in shipped)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {re.split(r"[<>=]", d)[0] for d in extras["viewer"]} == {"starlette", "uvicorn", "jinja2"}
    assert Path(pkg / "viewer" / "templates" / "base.html").exists()
