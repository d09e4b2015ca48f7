"""``circuitlab serve`` as a real process: uvicorn on 127.0.0.1 (a free port), the page in headless Chromium, and
the faults a server left running meets: a client that hangs up mid-stream, ``kill -9`` during a job, SIGTERM.

The page's numbers are checked against the library called here (:func:`direct_logit_attribution`); the browser
parts skip when Chromium is missing, as tests/test_browser.py does (a failure under CI or
``CIRCUITLAB_REQUIRE_BROWSER``). Traffic stays on the loopback interface.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from chromium import headless_chromium

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TOY = "zoo/toy-lm"
FACT = "Wexmira has a house in"
CLEAN = "When Mary and John went to the store, John gave a book to"
CORRUPTED = "When Mary and John went to the store, Mary gave a book to"
#: a job that runs for a few seconds on one thread and reports progress often (causal tracing, many samples)
SLOW = {"prompt": CLEAN, "subject": "Mary", "answer": " Mary", "samples": 100}
MAIN = "import sys; from circuitlab.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``circuitlab serve -m zoo/toy-lm`` in a subprocess on a free loopback port."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.log = tempfile.NamedTemporaryFile("w+", prefix="circuitlab-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-c", MAIN, "serve", "-m", TOY, "--port", str(self.port),
                                      "--data", str(data), "--threads", "1", "-q"], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}: {self.output()}")
            try:
                if self.http.get("/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        raise AssertionError(f"the server did not answer in 120 s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def job(self, analysis: str, args: dict) -> dict:
        r = self.http.post("/api/jobs", json={"analysis": analysis, "args": args})
        assert r.status_code in (200, 202), r.text
        return r.json()

    def wait(self, run_id: str, until=("done", "failed", "cancelled", "interrupted"), timeout: float = 60) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.http.get(f"/api/jobs/{run_id}").json()
            if state["status"] in until:
                return state
            time.sleep(0.05)
        raise AssertionError(f"job {run_id} not {until} in {timeout} s: {state}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.http.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-data")


@pytest.fixture(scope="module")
def server(data):
    s = Server(data)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(window=(1280, 1600)) as driver:
        yield driver


@pytest.mark.browser
def test_the_page_shows_the_library_dla_and_runs_a_patching_job(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import circuitlab as cl
    from circuitlab.attribution import direct_logit_attribution

    d, wait = browser, WebDriverWait(browser, 60)
    d.get(server.url + "/#/dla")
    wait.until(lambda d: d.find_elements(By.ID, "arg-prompt"))
    d.find_element(By.ID, "arg-prompt").send_keys(FACT)
    d.find_element(By.ID, "arg-answer").send_keys(" Brindlecote")
    d.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_elements(By.ID, "dla-top"))
    top = d.find_element(By.ID, "dla-top")
    res = direct_logit_attribution(cl.load_model(TOY), FACT, " Brindlecote")
    (layer, head), value = res.top(1)[0]
    assert top.get_attribute("data-label") == f"L{layer}H{head}"
    assert float(top.get_attribute("data-value")) == pytest.approx(value, rel=1e-6)
    assert "prompt=Wexmira" in d.current_url  # the state is in the address

    # a patching job: the progress bar appears, then the result; the URL reopened shows the stored run at once
    d.execute_script("window.sawProgress = false; new MutationObserver(() => { if (document.getElementById("
                     "'job-progress')) window.sawProgress = true; }).observe(document.body, "
                     "{subtree: true, childList: true});")
    url = (f"{server.url}/#/patch?clean={quote(CLEAN)}&corrupted={quote(CORRUPTED)}&answer=%20Mary&wrong=%20John"
           "&site=z&by=layer%2Chead%2Cpos")
    d.get(url)
    wait.until(lambda d: d.find_elements(By.ID, "job-headline"))
    assert d.execute_script("return window.sawProgress") is True
    assert "clean 7.4" in d.find_element(By.ID, "job-headline").text
    assert "done" in d.find_element(By.ID, "status").text
    d.get(server.url + "/#/history")
    d.get(url)
    wait.until(lambda d: "stored result" in d.find_element(By.ID, "status").text)

    # explanation feedback: the before / after accuracy table and the attributions of a signed review
    d.get(server.url + "/#/xmd")
    wait.until(lambda d: d.find_elements(By.ID, "arg-n_train"))
    for name, value in (("n_train", "10"), ("n_test", "8"), ("examples", "1")):
        box = d.find_element(By.ID, f"arg-{name}")
        box.clear()
        box.send_keys(value)
    d.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.xmd-example"))
    rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#output table.heatmap tr th:first-child")]
    assert "before (plain)" in rows and "after (feedback)" in rows
    d.find_element(By.ID, "try-saved").click()  # the saved classifier, loaded back, on a review typed here
    wait.until(lambda d: d.find_elements(By.ID, "arg-text"))
    d.find_element(By.ID, "arg-text").send_keys("The film was lovely. Posted by Carl.")
    d.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_elements(By.ID, "classify-score"))
    assert math.isfinite(float(d.find_element(By.ID, "classify-score").get_attribute("data-score")))
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_a_client_that_hangs_up_mid_stream_leaves_the_server_well(server):
    job = server.job("trace", {**SLOW, "seed": 1})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET /api/jobs/{job['id']}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert b"text/event-stream" in s.recv(4096)
    # the job goes on without its listener, and the server answers
    assert server.http.get("/api/health").status_code == 200
    server.wait(job["id"], until=("running", "done"))
    server.http.post(f"/api/jobs/{job['id']}/cancel")
    assert server.wait(job["id"])["status"] in ("cancelled", "done")


def test_kill_9_during_a_job_then_sigterm(server, data):
    done = server.job("patch", {"clean": CLEAN, "corrupted": CORRUPTED, "answer": " Mary", "wrong": " John"})
    done = server.wait(done["id"])
    assert done["status"] == "done"
    running = server.job("trace", {**SLOW, "seed": 2})
    server.wait(running["id"], until=("running",))
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)

    again = Server(data)  # the same --data: every finished run is there, the killed one marked interrupted
    try:
        assert again.http.get(f"/api/jobs/{done['id']}").json()["result"] == done["result"]
        assert again.http.get(f"/api/jobs/{running['id']}").json()["status"] == "interrupted"
        ids = {r["id"] for r in again.http.get("/api/history").json()["runs"]}
        assert {done["id"], running["id"]} <= ids
        cached = again.job("patch", {"clean": CLEAN, "corrupted": CORRUPTED, "answer": " Mary", "wrong": " John"})
        assert cached["cached"] is True and cached["id"] == done["id"]

        # SIGTERM during a job: the job is cancelled, the database closed cleanly, the process ends with 0
        job = again.job("trace", {**SLOW, "seed": 3})
        again.wait(job["id"], until=("running",))
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(30) == 0, again.output()
    finally:
        again.stop()
    db = data / "circuitlab-serve.sqlite3"
    wal = data / "circuitlab-serve.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed at the clean close
    with sqlite3.connect(db) as con:
        status = con.execute("SELECT status FROM runs WHERE id=?", (job["id"],)).fetchone()[0]
    assert status == "cancelled"
