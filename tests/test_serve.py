"""``circuitlab serve`` in process (FastAPI's TestClient): the API returns the library's numbers, jobs run,
are stored and cancelled, and every refusal of the security rules is an HTTP error, never a traceback.

References: the views are compared with the library's calls made here (:func:`direct_logit_attribution`,
:func:`logit_lens`, :func:`circuitlab.patching.sweep`) through the library's one serialisation, and the
next-token distribution and attention patterns with TransformerLens' own forward pass and cache.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

import circuitlab as cl
from circuitlab.errors import InputError
from circuitlab.results import to_jsonable

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from circuitlab.serve import create_app  # noqa: E402
from circuitlab.serve.store import Store  # noqa: E402

TOY = "zoo/toy-lm"
FACT = "Wexmira has a house in"
CLEAN = "When Mary and John went to the store, John gave a book to"
CORRUPTED = "When Mary and John went to the store, Mary gave a book to"
PATCH = {"clean": CLEAN, "corrupted": CORRUPTED, "answer": " Mary", "wrong": " John"}
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def model():
    return cl.load_model(TOY)


@pytest.fixture(scope="module")
def app(model, tmp_path_factory):
    app = create_app({TOY: model}, tmp_path_factory.mktemp("serve-data"), threads=1, max_queue=2)
    yield app
    app.state.shutdown()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, base_url=LOCAL)


def wait(client, run_id: str, timeout: float = 60) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = client.get(f"/api/jobs/{run_id}").json()
        if state["status"] not in ("queued", "running"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {run_id} did not finish in {timeout} s")


# -- the views: the library's numbers ------------------------------------------------------------------------------

def test_models_names_the_loaded_model_with_its_fingerprint(client, model):
    from circuitlab.models.identity import weight_fingerprint

    data = client.get("/api/models").json()
    assert [m["name"] for m in data["models"]] == [TOY]
    assert data["models"][0]["fingerprint"] == weight_fingerprint(model)
    assert {a["name"] for a in data["analyses"]} >= {"next_token", "logit_lens", "dla", "attention", "patch", "trace"}


def test_dla_view_is_the_library_call(client, model):
    from circuitlab.attribution import direct_logit_attribution

    got = client.post("/api/view/dla", json={"model": TOY, "args": {"prompt": FACT, "answer": " Brindlecote"}})
    assert got.status_code == 200, got.text
    want = to_jsonable(direct_logit_attribution(model, FACT, " Brindlecote"))
    assert got.json()["result"] == json.loads(json.dumps(want))
    # without an answer, the model's own top token (read from TransformerLens' logits here)
    top = int(model(FACT)[0, -1].argmax())
    default = client.post("/api/view/dla", json={"args": {"prompt": FACT, "by": "layer"}}).json()["result"]
    assert default["values"] == to_jsonable(direct_logit_attribution(model, FACT, top, by="layer"))["values"]


def test_logit_lens_view_is_the_library_call_without_the_full_logits(client, model):
    from circuitlab.attribution import logit_lens

    got = client.post("/api/view/logit_lens", json={"args": {"prompt": FACT, "k": 3}}).json()["result"]
    lens = logit_lens(model, FACT, k=3)
    assert got["omitted"] == ["logits"] and "logits" not in got["fields"]
    for name in ("answer_prob", "answer_rank", "top"):
        assert got["fields"][name] == json.loads(json.dumps(to_jsonable(getattr(lens, name))))


def test_next_token_and_attention_match_transformer_lens(client, model):
    got = client.post("/api/view/next_token", json={"args": {"prompt": FACT, "k": 5}}).json()["result"]
    with torch.no_grad():
        logits, cache = model.run_with_cache(FACT)
    probs = logits[0, -1].softmax(-1)
    top = probs.topk(5)
    assert got["token_ids"]["data"][0] == top.indices.tolist()
    assert torch.allclose(torch.tensor(got["values"]["data"][0]), top.values, atol=1e-6)
    att = client.post("/api/view/attention", json={"args": {"prompt": FACT}}).json()["result"]
    want = torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)])
    assert att["values"]["shape"] == list(want.shape)
    assert torch.allclose(torch.tensor(att["values"]["data"]), want, atol=1e-6)


def test_view_exports_csv_and_the_html_report(client):
    body = {"args": {"prompt": FACT, "answer": " Brindlecote"}}
    csv = client.post("/api/view/dla/export?format=csv", json=body)
    assert csv.status_code == 200 and csv.text.splitlines()[0].startswith("layer,")
    assert len(csv.text.strip().splitlines()) == 1 + 16  # header + 4 layers x 4 heads
    page = client.post("/api/view/dla/export?format=html", json=body)
    assert page.status_code == 200 and page.text.startswith("<!DOCTYPE html>")
    assert "Direct logit attribution" in page.text
    assert client.post("/api/view/dla/export?format=pickle", json=body).status_code == 400


# -- refusals -------------------------------------------------------------------------------------------------------

BAD_REQUESTS = [  # (method, path, body or raw bytes, headers, status, words of the message)
    ("post", "/api/view/dla", {"model": "/etc/passwd", "args": {"prompt": FACT}}, {}, 400, "never as paths"),
    ("post", "/api/view/dla", {"model": "../zoo/toy-lm", "args": {"prompt": FACT}}, {}, 400, "not loaded"),
    ("post", "/api/view/nope", {"args": {"prompt": FACT}}, {}, 400, "unknown analysis"),
    ("post", "/api/view/patch", {"args": PATCH}, {}, 400, "runs as a job"),
    ("post", "/api/view/dla", {"args": {}}, {}, 400, "needs prompt"),
    ("post", "/api/view/dla", {"args": {"prompt": FACT, "evil": "__import__('os')"}}, {}, 400, "no argument"),
    ("post", "/api/view/dla", {"args": {"prompt": 3}}, {}, 400, "must be a string"),
    ("post", "/api/view/dla", {"args": {"prompt": FACT, "by": "everything"}}, {}, 400, "must be one of"),
    ("post", "/api/view/next_token", {"args": {"prompt": FACT, "k": 10**9}}, {}, 400, "between"),
    ("post", "/api/view/dla", {"args": {"prompt": "x" * 3000}}, {}, 400, "at most"),
    ("post", "/api/view/dla", {"args": {"prompt": " word" * 300}}, {}, 400, "tokens long"),
    ("post", "/api/view/dla", {"args": {"prompt": FACT, "answer": " Brindlecote house"}}, {}, 400, "token"),
    ("post", "/api/view/dla", b"{not json", {}, 400, "not valid JSON"),
    ("post", "/api/view/dla", b'{"args": {"prompt": NaN}}', {}, 400, "NaN"),
    ("post", "/api/view/dla", b"[1, 2]", {}, 400, "JSON object"),
    ("post", "/api/view/dla", b"{" + b" " * 70_000 + b"}", {}, 413, "over"),
    ("post", "/api/jobs", {"analysis": "dla", "args": {"prompt": FACT}}, {}, 400, "answers at once"),
    ("get", "/api/health", None, {"host": "evil.example:80"}, 400, "Host"),
    ("get", "/api/health", None, {"origin": "http://evil.example"}, 403, "cross-origin"),
    ("get", "/api/health", None, {"origin": "null"}, 403, "cross-origin"),
    ("post", "/api/view/dla", {"args": {"prompt": FACT}}, {"origin": "http://127.0.0.1:9999"}, 403, "cross-origin"),
    ("post", "/api/view/dla", {"args": {"prompt": FACT}}, {"origin": "http://localhost"}, 403, "cross-origin"),
    ("get", "/static/..%2Fapp.py", None, {}, 404, ""),
    ("get", "/static/%2e%2e%2f%2e%2e%2fcore.py", None, {}, 404, ""),
    ("get", "/static/app.py", None, {}, 404, ""),
    ("get", "/api/jobs/nope", None, {}, 404, "no job"),
    ("get", "/api/history?limit=100000", None, {}, 400, "limit"),
]


@pytest.mark.parametrize("method, path, body, headers, status, words", BAD_REQUESTS,
                         ids=[f"{r[0]} {r[1]} {str(r[2])[:30]} {r[4]}" for r in BAD_REQUESTS])
def test_bad_requests_are_refused(client, method, path, body, headers, status, words):
    kwargs = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["content"] = body
        kwargs["headers"] = {**headers, "content-type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    got = getattr(client, method)(path, **kwargs)
    assert got.status_code == status, got.text
    if words:
        assert words in got.json()["error"], got.json()
    assert client.get("/api/health").status_code == 200  # the server goes on


def test_the_page_s_own_origin_is_accepted(client):
    got = client.post("/api/view/next_token", json={"args": {"prompt": FACT}}, headers={"origin": LOCAL})
    assert got.status_code == 200, got.text


def test_static_files_are_the_page_and_circuitsvis_once(client):
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    from circuitlab.render.report import external_references

    assert external_references(page.text) == []
    bundle = client.get("/static/circuitsvis.js")
    assert bundle.status_code == 200 and "CircuitsVis" in bundle.text[:5000] + bundle.text[-5000:]
    for name in ("app.js", "app.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_token_is_required_on_every_request(model, tmp_path):
    token = "t" * 24
    app = create_app({TOY: model}, tmp_path, token=token, threads=1)
    try:
        c = TestClient(app, base_url=LOCAL)
        assert c.get("/api/health").status_code == 401
        assert c.get("/static/app.js").status_code == 401
        assert c.get("/api/health", headers={"authorization": "Bearer " + "u" * 24}).status_code == 401
        assert c.get("/api/health", headers={"authorization": f"Bearer {token}"}).status_code == 200
        first = c.get(f"/?token={token}")  # the printed address: sets the cookie the page then sends
        assert first.status_code == 200 and "circuitlab_token" in first.headers["set-cookie"]
        assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
        assert c.get("/api/health").status_code == 200  # by the cookie
    finally:
        app.state.shutdown()


def test_every_interface_answers_to_the_machine_names_only(model, tmp_path):
    import socket

    token = "k" * 20
    app = create_app({TOY: model}, tmp_path, token=token, host="0.0.0.0", allowed_hosts=["lab.example"], threads=1)
    try:
        c = TestClient(app, base_url=LOCAL)
        auth = {"authorization": f"Bearer {token}"}
        for name in (socket.gethostname(), "lab.example:8765", "127.0.0.1:8765"):
            assert c.get("/api/health", headers={**auth, "host": name}).status_code == 200, name
        assert c.get("/api/health", headers={**auth, "host": "rebound.example"}).status_code == 400
    finally:
        app.state.shutdown()


def test_a_non_local_host_needs_a_token(model, tmp_path):
    with pytest.raises(InputError, match="needs a token"):
        create_app({TOY: model}, tmp_path, host="0.0.0.0", threads=1)
    with pytest.raises(InputError, match="at least 16"):
        create_app({TOY: model}, tmp_path, token="short", threads=1)
    with pytest.raises(InputError, match="not a host"):
        create_app({TOY: model}, tmp_path, host="evil.example/path", threads=1)


# -- jobs ------------------------------------------------------------------------------------------------------------

def test_patching_job_is_the_library_sweep_stored_and_served_again(client, model):
    from circuitlab.metrics import LogitDiff
    from circuitlab.patching import sweep

    args = {**PATCH, "site": "z", "by": "layer,head"}
    first = client.post("/api/jobs", json={"analysis": "patch", "args": args})
    assert first.status_code == 202 and first.json()["cached"] is False
    done = wait(client, first.json()["id"])
    assert done["status"] == "done", done
    want = sweep(model, CLEAN, CORRUPTED, LogitDiff(" Mary", " John", model=model), site="z", by="layer,head")
    got, want = done["result"], json.loads(json.dumps(to_jsonable(want)))
    got["meta"].pop("seconds"), want["meta"].pop("seconds")  # the run's own timing
    assert got == want
    # the same arguments, spelled otherwise (defaults written out): the stored run, at once
    again = client.post("/api/jobs", json={"analysis": "patch", "model": TOY,
                                           "args": {**args, "direction": "denoising"}})
    assert again.status_code == 200 and again.json()["cached"] is True and again.json()["id"] == done["id"]
    runs = client.get("/api/history").json()["runs"]
    assert any(r["id"] == done["id"] and r["status"] == "done" for r in runs)
    csv = client.get(f"/api/jobs/{done['id']}/export?format=csv")
    assert len(csv.text.strip().splitlines()) == 1 + 16
    assert "Activation patching" in client.get(f"/api/jobs/{done['id']}/export?format=html").text


def test_event_stream_reports_progress_then_the_end(client):
    job = client.post("/api/jobs", json={"analysis": "patch", "args": {**PATCH, "by": "layer,pos"}}).json()
    events = []
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    assert events[-1][0] == "end" and events[-1][1]["status"] == "done"
    # the job's states in order (a fast job may be over before the stream's first look)
    assert all(k == "progress" and e["status"] in ("queued", "running") for k, e in events[:-1])
    for _, e in events[:-1]:
        assert e["progress"].get("total") is None or 0 <= e["progress"]["n"] <= e["progress"]["total"]


def test_progress_comes_from_the_library_progress_bars():
    from circuitlab.core import progress_bar, progress_sink

    seen = []
    with progress_sink(lambda desc, n, total: seen.append((desc, n, total))):
        for _ in progress_bar(range(3), progress=True, desc="steps"):
            pass
        list(progress_bar(range(2), progress=False, desc="hidden"))
    assert seen == [("steps", 1, 3), ("steps", 2, 3), ("steps", 3, 3)]


def test_a_failing_analysis_fails_its_job_not_the_server(client):
    job = client.post("/api/jobs", json={"analysis": "trace", "args": {"prompt": FACT, "subject": "Zorvulon",
                                                                       "answer": " Brindlecote"}})
    state = wait(client, job.json()["id"])
    assert state["status"] == "failed" and "Zorvulon" in state["error"], state
    assert client.get(f"/api/jobs/{state['id']}/export").status_code == 400
    assert client.post("/api/view/next_token", json={"args": {"prompt": FACT}}).status_code == 200


def test_cancel_and_the_bounded_queue(client):
    slow = {"prompt": FACT, "subject": "Wexmira", "answer": " Brindlecote", "samples": 60}
    ids = []
    for seed in range(3):  # one running + max_queue=2 waiting
        r = client.post("/api/jobs", json={"analysis": "trace", "args": {**slow, "seed": seed}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
        if seed == 0:
            end = time.monotonic() + 30
            while client.get(f"/api/jobs/{ids[0]}").json()["status"] != "running" and time.monotonic() < end:
                time.sleep(0.02)
    full = client.post("/api/jobs", json={"analysis": "trace", "args": {**slow, "seed": 99}})
    assert full.status_code == 429 and "full" in full.json()["error"]
    for run_id in ids:
        assert client.post(f"/api/jobs/{run_id}/cancel").status_code == 200
    states = [wait(client, run_id) for run_id in ids]
    assert [s["status"] for s in states] == ["cancelled"] * 3, states
    assert client.post("/api/jobs", json={"analysis": "trace", "args": {**slow, "seed": 99}}).status_code == 202
    client.post(f"/api/jobs/{client.get('/api/history?limit=1').json()['runs'][0]['id']}/cancel")


def test_store_marks_unfinished_runs_interrupted_and_keeps_the_rest(tmp_path):
    store = Store(tmp_path)
    done = store.add("m", "f", "patch", "{}")
    store.set_status(done, "done", result={"x": [1.5, None]})
    left = store.add("m", "f", "trace", "{}")
    store.set_status(left, "running")
    store._db.close()  # as a killed process leaves it: no checkpoint, no clean close
    again = Store(tmp_path)
    assert again.interrupted == 1
    assert again.get(left)["status"] == "interrupted"
    assert again.get(done)["result"] == {"x": [1.5, None]}
    assert again.find_done("f", "patch", "{}")["id"] == done
    again.close()


def test_explanation_feedback_job_is_the_library_experiment(client, model):
    from circuitlab.concepts.debugging import regularisation_experiment

    args = {"irrelevant": "names", "lam": 10.0, "n_train": 10, "n_test": 8, "examples": 1, "seed": 3}
    job = client.post("/api/jobs", json={"analysis": "xmd", "args": args}).json()
    state = wait(client, job["id"])
    assert state["status"] == "done", state
    res = state["result"]
    want = regularisation_experiment(model, seeds=[3], n_train=10, n_test=8, lam=10.0, irrelevant="names",
                                     n_attributed=1, ig_steps=16)
    assert torch.equal(torch.tensor(res["values"]["data"]), want.accuracy.values[..., 0].float())
    example = res["meta"]["examples"][0]
    assert len(example["tokens"]) == len(example["before"]) == len(example["after"]) and example["marked"]
    # the feedback is stored with the run
    run = next(r for r in client.get("/api/history").json()["runs"] if r["id"] == job["id"])
    assert run["args"]["irrelevant"] == "names" and run["args"]["lam"] == 10.0

    # the classifier it saved, loaded back: the score of a new review as the library's retrained head gives it
    from circuitlab.concepts.debugging import irrelevant_directions, shortcut_reviews, train_classifier

    text = "The film was lovely. Posted by Carl."
    got = client.post("/api/view/classify", json={"args": {"run": job["id"], "text": text}})
    assert got.status_code == 200, got.text
    train = shortcut_reviews(10, seed=3)
    clf = train_classifier(model, train, lam=0.0)
    penalty = irrelevant_directions(clf, train, irrelevant="names")
    clf = train_classifier(model, train, lam=10.0, penalty=penalty)
    assert got.json()["result"]["meta"]["score"] == pytest.approx(float(clf.scores([text])[0]), rel=1e-9, abs=1e-12)
    for bad in ({"run": "nope", "text": text}, {"run": state["id"], "text": text, "which": "during"}):
        assert client.post("/api/view/classify", json={"args": bad}).status_code == 400
    patch_run = client.post("/api/jobs", json={"analysis": "patch", "args": PATCH}).json()
    wait(client, patch_run["id"])
    refused = client.post("/api/view/classify", json={"args": {"run": patch_run["id"], "text": text}})
    assert refused.status_code == 400 and "not a finished xmd job" in refused.json()["error"]
