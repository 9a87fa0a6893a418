#!/usr/bin/env python3
"""The web console in a real headless Chromium (selenium + Debian's chromium-driver) against a real cluster.

  job:     `anneal up` (1 agent x 1 CPU slot, the coordinator's HTTP port on), users alice (member of team
           default) and victor (viewer); alice submits a LoRA job run by the real anneal-train. In the browser:
           a wrong token is refused at login with the server's reason; victor logs in with his token (whoami shows him as a viewer), opens the job's page, sees its loss
           curve grow as metrics arrive, presses Cancel and is refused with the server's reason shown on the
           page, and the job keeps running; alice logs in, sees the curve, presses Cancel and the page shows the
           job cancelled (the CLI agrees). The token never appears in a URL.
  cluster: the admin's cluster page lists the node with its slots in use while alice's job runs, the team's
           usage, and the queue page shows a second job waiting behind it with its reason; the admin drains and
           undrains the node from the page.
Screenshots go to --artifacts (ctest: <build>/tests/integration/web/artifacts). Exit 77 (skipped) with the
reason when chromium, chromium-driver, selenium or anneal-train is missing, or the coordinator has no REST API.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import ROOT, free_port, http_get, lora_job_yaml, make_tokenizer, run, skip, wait_for  # noqa: E402



def browser():
    """A headless Chromium through Debian's chromedriver, or a skip naming what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        skip("selenium is not installed (scripts/setup.sh pins it in scripts/requirements.txt)")
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if chromium is None or not os.access(driver, os.X_OK):
        skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


class Console:
    """The console in one browser, with waits that name what they waited for."""

    def __init__(self, driver, base, artifacts):
        from selenium.webdriver.common.by import By
        self.by = By
        self.d = driver
        self.base = base
        self.artifacts = artifacts
        self.urls = []

    def open(self, path):
        self.d.get(self.base + path)
        self.urls.append(self.d.current_url)

    def find(self, css):
        found = self.d.find_elements(self.by.CSS_SELECTOR, css)
        return found[0] if found else None

    def text(self, css):
        """The element's visible text; "" when absent (or re-rendered while read: the waits ask again)."""
        from selenium.common.exceptions import StaleElementReferenceException
        try:
            e = self.find(css)
            return e.text if e is not None and e.is_displayed() else ""
        except StaleElementReferenceException:
            return ""

    def wait_text(self, css, pattern, timeout=30):
        return wait_for(f"{css} to match {pattern!r} (now {self.text(css)!r}; banner {self.text('#banner')!r})",
                        lambda: re.search(pattern, self.text(css)) and self.text(css), timeout)

    def login(self, token):
        self.open("/ui/")
        self.wait_text("#login h1", "Log in")
        box = self.find("#token")
        box.clear()
        box.send_keys(token)
        self.find("#login button[type=submit]").click()
        self.urls.append(self.d.current_url)

    def logout(self):
        self.find("#logout").click()
        self.wait_text("#login h1", "Log in")

    def points(self, chart_id):
        """How many points a chart draws (its data-points attribute)."""
        from selenium.common.exceptions import StaleElementReferenceException
        try:
            e = self.find(f"#{chart_id}")
            return int(e.get_attribute("data-points") or 0) if e is not None else 0
        except StaleElementReferenceException:
            return 0

    def shot(self, name):
        os.makedirs(self.artifacts, exist_ok=True)
        path = os.path.join(self.artifacts, f"{name}.png")
        self.d.save_screenshot(path)
        print(f"screenshot: {path}", flush=True)

    def console_errors(self):
        try:
            # A refused request is logged by Chromium as "Failed to load resource": the page handles those.
            return [e["message"] for e in self.d.get_log("browser")
                    if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
        except Exception:  # noqa: BLE001 (a driver without logs)
            return []


class Cluster:
    """`anneal up` in tmp with the HTTP port on; users alice (member) and victor (viewer) of team default."""

    def __init__(self, bindir, tmp):
        self.bindir, self.tmp = bindir, tmp
        self.env = dict(os.environ, ANNEAL_HOME=f"{tmp}/home", OMP_NUM_THREADS="1")
        self.env.pop("ANNEAL_TOKEN", None)

    def start(self, trainer):
        bindir, tmp = self.bindir, self.tmp
        make_tokenizer(f"{tmp}/tok")
        run([trainer, "model", "init", "--arch", "qwen2", "--preset", "tiny", "--tokenizer", f"{tmp}/tok", "--out",
             f"{tmp}/base", "--seed", "2"])
        run(["bash", os.path.join(ROOT, "scripts/rank-access.sh"), bindir, os.path.dirname(trainer),
             os.path.join(ROOT, ".venv"), tmp])
        self.port = free_port()
        self.anneal("up", "--agents", "1", "--slots", "1", "--allow-root", tmp, "--allow-root",
                    os.path.join(ROOT, "examples"), "--coordinator-set", f"http_bind=127.0.0.1:{self.port}",
                    "--agent-set", f"trainer={trainer}")
        self.base = f"http://127.0.0.1:{self.port}"
        config = open(f"{tmp}/home/config").read()
        self.admin = re.search(r'^token:\s*"?([^"\n]+)"?', config, re.M).group(1)
        if http_get(f"{self.base}/api/v1/whoami", self.admin)[0] == 404:
            skip("this coordinator has no REST API (/api/v1/whoami is 404): the console needs it")
        self.tokens = {}
        for user, role in (("alice", "member"), ("victor", "viewer")):
            self.anneal("user", "create", user)
            self.anneal("team", "add-member", "default", user, "--role", role)
            self.tokens[user] = self.anneal("token", "create", "--user", user).stdout.strip().splitlines()[-1]

    def anneal(self, *args, token=None, check=True, timeout=120):
        env = dict(self.env, ANNEAL_TOKEN=token) if token else self.env
        p = subprocess.run([os.path.join(self.bindir, "anneal"), *args], capture_output=True, text=True, env=env,
                           timeout=timeout)
        assert not check or p.returncode == 0, f"anneal {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        return p

    def state(self, job):
        out = self.anneal("show", job).stdout
        found = re.search(r"^\s*State:?\s+(\w+)", out, re.M)
        assert found, f"anneal show {job} printed no State line:\n{out}"
        return found.group(1).upper().removeprefix("JOB_")

    def down(self):
        self.anneal("down", check=False, timeout=60)


def case_job(cluster, console):
    job = cluster.anneal("submit", lora_job_yaml(cluster.tmp, "web-job", 3000), token=cluster.tokens["alice"]).stdout.strip()
    # A wrong token: refused on the login page with the server's reason, nothing kept.
    console.login("ant_000000000000_" + "0" * 64)
    console.wait_text("#login-error", r"^Login refused: .*token")
    assert console.d.execute_script("return sessionStorage.length") == 0, "a refused token was kept"
    # The viewer: sees the job and its curve grow, is refused the cancel with the server's reason.
    console.login(cluster.tokens["victor"])
    console.wait_text("#user-name", "^victor$")
    console.wait_text("#user-roles", "default: viewer")
    console.open(f"/ui/jobs/{job}")
    console.wait_text("[data-fact=state]", "running", timeout=90)
    first = wait_for("the loss curve's first points", lambda: console.points("chart-loss") >= 2 and console.points("chart-loss"), 60)
    grown = wait_for(f"the loss curve to grow past {first} points without a reload",
                     lambda: console.points("chart-loss") > first and console.points("chart-loss"), 60)
    assert console.text("#live-mode").startswith("● live"), console.text("#live-mode")
    console.shot("job-viewer-curve")
    console.find("#cancel").click()
    refusal = console.wait_text("#action-message", "^Cancel refused: ")
    assert re.search(r"viewer|member|permission|may not|not allowed", refusal, re.I), refusal
    assert "error" in console.find("#action-message").get_attribute("class")
    console.shot("job-viewer-refused")
    assert cluster.state(job) == "RUNNING", f"the viewer's refused cancel changed the job: {cluster.state(job)}"
    # The owner: cancels it from the page.
    console.logout()
    console.login(cluster.tokens["alice"])
    console.wait_text("#user-name", "^alice$")
    console.open(f"/ui/jobs/{job}")
    wait_for("alice's page to draw the curve", lambda: console.points("chart-loss") >= grown, 30)
    console.find("#cancel").click()
    console.wait_text("#action-message", "^Cancel requested")
    console.wait_text("[data-fact=state]", "cancelled", timeout=60)
    assert cluster.state(job) == "CANCELLED", cluster.state(job)
    assert console.find("#timeline .state-cancelled") is not None, "the timeline does not show the cancel"
    console.shot("job-owner-cancelled")
    for url in console.urls:
        assert all(t not in url for t in cluster.tokens.values()) and cluster.admin not in url, f"a token in {url}"
    print(f"job: the viewer saw {job}'s loss grow {first} -> {grown} points and was refused ({refusal!r}); "
          f"its owner cancelled it from the page", flush=True)


def case_cluster(cluster, console):
    running = cluster.anneal("submit", lora_job_yaml(cluster.tmp, "web-run", 3000), token=cluster.tokens["alice"]).stdout.strip()
    wait_for(f"{running} to run", lambda: cluster.state(running) == "RUNNING", 60)
    waiting = cluster.anneal("submit", lora_job_yaml(cluster.tmp, "web-wait", 10),
                             token=cluster.tokens["alice"]).stdout.strip()
    console.login(cluster.admin)
    console.wait_text("#user-roles", "cluster admin")
    console.open("/ui/cluster")
    console.wait_text("#nodes-table", "local-0")
    console.wait_text("#cluster-summary", r"slots in use 1 / 1", timeout=60)
    console.wait_text("#teams-table", "default")
    # GPUs as the agent's heartbeats report them (NVML): one row each with its utilization and memory; a node
    # without NVML says so.
    reply = json.loads(http_get(f"{cluster.base}/api/v1/nodes", cluster.admin)[1])
    nodes = reply.get("list_nodes", reply)["nodes"]
    gpus = nodes[0].get("inventory", {}).get("gpus", [])
    if gpus:
        wait_for(f"{len(gpus)} GPU rows", lambda: len(console.d.find_elements(console.by.CSS_SELECTOR, "#nodes-table [data-gpu]")) == len(gpus), 20)
        console.wait_text("#nodes-table", r"\d+% util")
    else:
        console.wait_text("#nodes-table", "CPU only")
    console.shot("cluster")
    console.open("/ui/queue")
    reason = console.wait_text(f"#queue-table tr[data-key='{waiting}'] td.reason", r"^(?!—)\S", timeout=30)
    console.shot("queue")
    # Drain from the page, then undrain: the node's state follows.
    console.open("/ui/cluster")
    console.wait_text("#nodes-table", "local-0")
    console.find("#nodes-table [data-action=drain]").click()
    console.wait_text("#nodes-table", "draining")
    console.find("#nodes-table [data-action=drain]").click()
    console.wait_text("#nodes-table", r"\bup\b")
    cluster.anneal("cancel", running, token=cluster.tokens["alice"])
    cluster.anneal("cancel", waiting, token=cluster.tokens["alice"])
    print(f"cluster: node, slots, {len(gpus)} GPU(s) and team shown; queue reason for {waiting}: {reason!r}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--trainer", default="")
    ap.add_argument("--artifacts", default="")
    ap.add_argument("--case", choices=["job", "cluster"], required=True)
    args = ap.parse_args()
    trainer = os.environ.get("ANNEAL_TRAIN") or args.trainer or os.path.join(args.bindir, "anneal-train")
    if not os.access(trainer, os.X_OK):
        skip(f"no anneal-train at {trainer} (build the trainer, or set ANNEAL_TRAIN to one)")
    artifacts = args.artifacts or os.path.join(tempfile.gettempdir(), "anneal-web-artifacts")
    driver = browser()
    tmp = tempfile.mkdtemp(prefix="anneal-web-")
    os.chmod(tmp, 0o755)
    cluster = None
    console = None
    t0 = time.time()
    try:
        cluster = Cluster(os.path.abspath(args.bindir), tmp)
        cluster.start(os.path.abspath(trainer))
        console = Console(driver, cluster.base, artifacts)
        {"job": case_job, "cluster": case_cluster}[args.case](cluster, console)
        errors = console.console_errors()
        assert not errors, f"the browser's console logged errors: {errors}"
        print(f"PASS {args.case} ({time.time() - t0:.0f} s)", flush=True)
    except Exception as e:  # noqa: BLE001 (an assertion or a driver error: one FAIL line, the page's screenshot)
        if console is not None:
            console.shot(f"FAILED-{args.case}")
            print("browser log:", console.console_errors(), flush=True)
        print(f"FAIL {args.case}: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    finally:
        driver.quit()
        if cluster is not None:
            cluster.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
