#!/usr/bin/env python3
"""The REST API (/api/v1) against a real anneal-coordinator (RocksDB in a temp dir, CurveZMQ on, its HTTP port).

  jobs:    submit a YAML spec (201), show, list with state/team filters and paging, watch (long poll), cancel,
           logs of a job never placed (404 naming the rank), nodes, drain of an unknown node (404), queue;
           bodies past their limits are 413 and the server still serves; the legacy /api/jobs still answers.
  stream:  server-sent events of a job: the job record first, its events (cancel) and `end`; Last-Event-ID
           resumes after what was seen; a second stream past http_max_streams_per_token is 429 naming the limit
           while the first still serves; an unknown job is a 404 JSON error, not a stream.
  roles:   each endpoint x (cluster admin, team admin, member, viewer, another team's member, no token, bad
           token): the HTTP status is what the ZeroMQ API's roles say.
  openapi: GET /api/openapi.json is public and valid; schemathesis (PyPI) checks every operation's responses
           against it with the admin's token (no 5xx, documented status codes, content types and schemas);
           deleting users and revoking tokens are left out of the fuzzing (it would remove its own credentials).
"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import run_cases, wait_for  # noqa: E402
from restlib import Coordinator  # noqa: E402

_next_spec = [0]


def spec(tmp, extra=""):
    _next_spec[0] += 1
    return (f"model_name_or_path: {tmp}/models/tiny\ndataset: alpaca\ndataset_dir: {tmp}/data\n"
            f"output_dir: {tmp}/out/run-{_next_spec[0]}\n"
            + extra)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def submit(c, tmp, token=None, team=""):
    q = f"?team={team}" if team else ""
    status, _, body = c.request("POST", "/api/v1/jobs" + q, token or c.admin_token, spec(tmp), "text/yaml")
    check(status == 201, f"submit: {status} {body}")
    return body["job_id"]


def case_jobs(bindir, tmp):
    c = Coordinator(bindir, tmp)
    try:
        t = c.admin_token
        c.cli("team", "create", "nlp")
        ids = [submit(c, tmp) for _ in range(3)] + [submit(c, tmp, team="nlp")]
        status, _, job = c.request("GET", f"/api/v1/jobs/{ids[0]}", t)
        check(status == 200 and job["job"]["job_id"] == ids[0], f"show: {status} {job}")
        check(job["job"]["state"] == "JOB_PENDING", f"a job without nodes waits: {job['job']['state']}")
        # JSON submit, as a browser would send it.
        status, _, created = c.request("POST", "/api/v1/jobs", t, {"spec_yaml": spec(tmp), "name": "from-json"})
        check(status == 201 and created["job_id"], f"JSON submit: {status} {created}")
        ids.append(created["job_id"])
        # Filters and paging.
        status, _, page = c.request("GET", "/api/v1/jobs?state=pending&team=default&limit=2", t)
        check(status == 200, f"list: {status} {page}")
        first = [j["job_id"] for j in page["jobs"]]
        check(first == [ids[2], ids[4]], f"the newest two of team default, oldest first: {first} of {ids}")
        check(page["next_page_token"] == ids[2], f"a full page says where the next starts: {page}")
        status, _, rest = c.request("GET", f"/api/v1/jobs?team=default&limit=2&page_token={page['next_page_token']}", t)
        check([j["job_id"] for j in rest["jobs"]] == ids[0:2], f"the second page: {rest}")
        status, _, nlp = c.request("GET", "/api/v1/jobs?team=nlp", t)
        check([j["job_id"] for j in nlp["jobs"]] == [ids[3]], f"team filter: {nlp}")
        check(nlp["next_page_token"] == "", "a page that is not full has no next page")
        # The CLI has the same filters.
        out = c.cli("ls", "--team", "nlp")
        check(ids[3] in out and ids[0] not in out, f"anneal ls --team nlp: {out}")
        # Watch: a long poll that returns the job's events.
        status, _, watch = c.request("GET", f"/api/v1/jobs/{ids[0]}/watch?timeout_ms=200", t)
        check(status == 200 and watch["job"]["job_id"] == ids[0] and watch["events"], f"watch: {status} {watch}")
        # Cancel.
        status, _, cancel = c.request("POST", f"/api/v1/jobs/{ids[0]}/cancel", t)
        check(status == 200 and cancel["state"] in ("JOB_CANCELLED", "JOB_CANCELLING"), f"cancel: {status} {cancel}")
        status, _, logs = c.request("GET", f"/api/v1/jobs/{ids[1]}/logs?rank=0", t)
        check(status == 404 and "rank 0" in logs["error"]["message"], f"logs of an unplaced job: {status} {logs}")
        status, _, nodes = c.request("GET", "/api/v1/nodes", t)
        check(status == 200 and nodes == {"nodes": []}, f"nodes: {nodes}")
        status, _, drain = c.request("POST", "/api/v1/nodes/ghost/drain", t, {"evict": True})
        check(status == 404 and drain["error"]["code"] == "NOT_FOUND", f"drain unknown: {status} {drain}")
        status, _, queue = c.request("GET", "/api/v1/queue?team=nlp", t)
        check(status == 200 and [j["job_id"] for j in queue["jobs"]] == [ids[3]], f"queue: {queue}")
        check(queue["jobs"][0]["wait_reason"] != "", "each queued job says why it waits")
        # Limits: a 20 KiB team body is 413; a 100 KiB spec is under the submit limit (refused as a spec, not size).
        status, _, big = c.request("POST", "/api/v1/teams", t, {"name": "x", "description": "d" * 20000})
        check(status == 413 and "http_max_request_bytes" in str(big), f"413 for a large body: {status} {big}")
        status, _, spec_reply = c.request("POST", "/api/v1/jobs", t, spec(tmp) + "#" * 100000 + "\n", "text/yaml")
        check(status == 201, f"a 100 KiB spec fits http_max_submit_bytes: {status} {spec_reply}")
        status, _, who = c.request("GET", "/api/v1/whoami", t)
        check(status == 200 and who["user"]["name"] == "admin", f"still serves after a refusal: {who}")
        status, _, legacy = c.request("GET", "/api/jobs", t)
        check(status == 200 and "jobs" in legacy, f"legacy /api/jobs: {status}")
        status, _, unknown = c.request("GET", "/api/v1/jobs/job-999999", t)
        check(status == 404 and "job-999999" in unknown["error"]["message"], f"unknown job: {unknown}")
    finally:
        c.stop()


def sse_open(port, path, token, last_event_id=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    headers = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    if last_event_id:
        headers += f"Last-Event-ID: {last_event_id}\r\n"
    s.sendall((headers + "\r\n").encode())
    return s


def sse_read_until(s, predicate, timeout=20):
    """Reads the stream until predicate(text so far) holds; the text."""
    text = ""
    deadline = time.time() + timeout
    while time.time() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        text += chunk.decode(errors="replace")
        if predicate(text):
            return text
    raise AssertionError(f"the stream did not show what was expected within {timeout} s: {text[-2000:]}")


def sse_events(text):
    events = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if line.startswith(":") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            fields[k] = v.strip()
        if "event" in fields:
            events.append(fields)
    return events


def case_stream(bindir, tmp):
    c = Coordinator(bindir, tmp, extra_config="http_max_streams_per_token: 1\n")
    try:
        t = c.admin_token
        job = submit(c, tmp)
        s = sse_open(c.port, f"/api/v1/jobs/{job}/stream", t)
        head = sse_read_until(s, lambda x: "event: job" in x)
        check(head.startswith("HTTP/1.1 200") and "text/event-stream" in head, f"stream head: {head[:300]}")
        # One stream per token here: a second is refused by name, and the first still serves.
        status, _, refused = c.request("GET", f"/api/v1/jobs/{job}/stream", t)
        check(status == 429 and refused["error"]["code"] == "RESOURCE_EXHAUSTED"
              and "http_max_streams_per_token" in refused["error"]["message"], f"second stream: {status} {refused}")
        status, _, _ = c.request("POST", f"/api/v1/jobs/{job}/cancel", t)
        check(status == 200, "cancel")
        text = head + sse_read_until(s, lambda x: "event: end" in x)
        events = sse_events(text[text.index("\r\n\r\n") + 4:])
        kinds = [e["event"] for e in events]
        check(kinds[0] == "job" and "event" in kinds and kinds[-1] == "end", f"stream events: {kinds}")
        job_data = json.loads(events[0]["data"])
        check(job_data["job_id"] == job, f"the job record: {job_data}")
        last_id = [e["id"] for e in events if "id" in e][-1]
        check(json.loads(events[-1]["data"])["state"] == "JOB_CANCELLED", f"end: {events[-1]}")
        s.close()
        # Resuming from the last id: no event seen again; the terminal job ends the stream at once.
        def resumed():
            r = sse_open(c.port, f"/api/v1/jobs/{job}/stream", t, last_event_id=last_id)
            try:
                return sse_read_until(r, lambda x: "event: end" in x or "429" in x[:20])
            finally:
                r.close()
        again = wait_for("the first stream's slot to be free", lambda: (lambda x: x if "event: end" in x else None)(
            resumed()), timeout=20)
        check("event: event" not in again, f"a resumed stream repeats no event: {again}")
        status, _, missing = c.request("GET", "/api/v1/jobs/job-424242/stream", t)
        check(status == 404 and missing["error"]["code"] == "NOT_FOUND", f"stream of an unknown job: {missing}")
    finally:
        c.stop()


# ---- roles --------------------------------------------------------------------------------------------------

def case_roles(bindir, tmp):
    c = Coordinator(bindir, tmp)
    try:
        c.cli("team", "create", "nlp")
        c.cli("team", "create", "vision")
        for user, team, role in [("lead", "nlp", "admin"), ("dev", "nlp", "member"), ("watcher", "nlp", "viewer"),
                                 ("outsider", "vision", "member")]:
            c.cli("user", "create", user)
            c.cli("team", "add-member", team, user, "--role", role)
        tokens = {"admin": c.admin_token, "team_admin": c.token_for("lead"), "member": c.token_for("dev"),
                  "viewer": c.token_for("watcher"), "other_team": c.token_for("outsider"), "none": None,
                  "bad": "ant_000000000000_" + "0" * 64}
        job = submit(c, tmp, team="nlp")
        # (method, path, body, {who: status}); who not named: the `rest` status.
        A, TA, M, V, O, N, B = "admin", "team_admin", "member", "viewer", "other_team", "none", "bad"
        matrix = [
            ("GET", "/api/v1/whoami", None, {N: 401, B: 401}, 200),
            ("GET", "/api/v1/jobs?team=nlp", None, {N: 401, B: 401}, 200),
            ("GET", f"/api/v1/jobs/{job}", None, {O: 403, N: 401, B: 401}, 200),
            ("GET", f"/api/v1/jobs/{job}/checkpoints", None, {O: 403, N: 401, B: 401}, 200),
            ("GET", f"/api/v1/jobs/{job}/watch?timeout_ms=0", None, {O: 403, N: 401, B: 401}, 200),
            ("POST", "/api/v1/jobs?team=nlp", "SPEC", {A: 201, TA: 201, M: 201, V: 403, O: 403, N: 401, B: 401}, 0),
            ("GET", "/api/v1/nodes", None, {N: 401, B: 401}, 200),
            ("POST", "/api/v1/nodes/ghost/drain", {}, {A: 404, N: 401, B: 401}, 403),
            ("GET", "/api/v1/queue?team=nlp", None, {O: 403, N: 401, B: 401}, 200),
            ("GET", "/api/v1/users", None, {A: 200, N: 401, B: 401}, 403),
            ("POST", "/api/v1/teams", {"name": "t-{who}"}, {A: 201, N: 401, B: 401}, 403),
            ("GET", "/api/v1/audit", None, {A: 200, N: 401, B: 401}, 403),
            ("GET", "/api/v1/join-tokens", None, {A: 200, N: 401, B: 401}, 403),
            ("DELETE", "/api/v1/users/nobody", None, {A: 404, N: 401, B: 401}, 403),
            ("GET", "/api/v1/tokens", None, {N: 401, B: 401}, 200),
            ("POST", "/api/v1/teams/nlp/members", {"user": "watcher", "role": "ROLE_VIEWER"},
             {A: 200, TA: 200, N: 401, B: 401}, 403),
            # Each principal cancels a fresh job of team nlp (a cancelled job is not cancelled twice).
            ("POST", "/api/v1/jobs/{fresh}/cancel", None, {V: 403, O: 403, N: 401, B: 401}, 200),
            # The job is not placed (no agent here): its readers learn it has no rank 0.
            ("GET", f"/api/v1/jobs/{job}/logs?rank=0", None, {O: 403, N: 401, B: 401}, 404),
            # ... and that it has no outputs to fetch yet.
            ("GET", f"/api/v1/jobs/{job}/outputs", None, {O: 403, N: 401, B: 401}, 409),
            ("GET", "/api/v1/teams", None, {N: 401, B: 401}, 200),
            ("DELETE", "/api/v1/teams/ghost", None, {A: 404, N: 401, B: 401}, 403),
            ("POST", "/api/v1/teams/nlp/quota", {"weight": 2}, {A: 200, N: 401, B: 401}, 403),
            ("POST", "/api/v1/users", {"name": "u-{who}"}, {A: 201, N: 401, B: 401}, 403),
            ("POST", "/api/v1/tokens", {"description": "t-{who}"}, {N: 401, B: 401}, 201),
            ("DELETE", "/api/v1/tokens/ghost", None, {N: 401, B: 401}, 404),
            ("POST", "/api/v1/join-tokens", {}, {A: 201, N: 401, B: 401}, 403),
            ("DELETE", "/api/v1/join-tokens/ghost", None, {A: 404, N: 401, B: 401}, 403),
            ("DELETE", "/api/v1/nodes/ghost", None, {A: 404, N: 401, B: 401}, 403),
            ("GET", "/api/v1/models?team=nlp", None, {O: 403, N: 401, B: 401}, 200),
            ("GET", "/api/v1/models/nlp/ghost", None, {O: 403, N: 401, B: 401}, 404),
            ("POST", "/api/v1/models/nlp/ghost/promote", {"version": 1}, {V: 403, O: 403, N: 401, B: 401}, 404),
            ("POST", "/api/v1/models/nlp/ghost/archive", {"version": 1}, {V: 403, O: 403, N: 401, B: 401}, 404),
            ("GET", "/api/v1/schedules?team=nlp", None, {O: 403, N: 401, B: 401}, 200),
            ("GET", "/api/v1/schedules/nlp/ghost", None, {O: 403, N: 401, B: 401}, 404),
            ("POST", "/api/v1/schedules/nlp/ghost/pause", None, {V: 403, O: 403, N: 401, B: 401}, 404),
            ("POST", "/api/v1/schedules/nlp/ghost/resume", None, {V: 403, O: 403, N: 401, B: 401}, 404),
            ("DELETE", "/api/v1/schedules/nlp/ghost", None, {V: 403, O: 403, N: 401, B: 401}, 404),
            ("GET", "/api/v1/pipelines?team=nlp", None, {O: 403, N: 401, B: 401}, 200),
            ("GET", "/api/v1/pipelines/ghost", None, {N: 401, B: 401}, 404),
            ("POST", "/api/v1/pipelines/ghost/cancel", None, {N: 401, B: 401}, 404),
            ("POST", "/api/v1/pipelines/ghost/retry", None, {N: 401, B: 401}, 404),
        ]
        failures = []
        for method, path, body, special, rest in matrix:
            for who, token in tokens.items():
                want = special.get(who, rest)
                b = body
                ctype = "application/json"
                if body == "SPEC":
                    b, ctype = spec(tmp), "text/yaml"
                elif isinstance(body, dict):
                    b = {k: (v.format(who=who) if isinstance(v, str) else v) for k, v in body.items()}
                if "{fresh}" in path:
                    path_now = path.format(fresh=submit(c, tmp, team="nlp"))
                else:
                    path_now = path
                status, _, reply = c.request(method, path_now, token, b, ctype)
                if status != want:
                    failures.append(f"{method} {path} as {who}: {status}, want {want}: {reply}")
                elif status >= 400 and not (isinstance(reply, dict) and reply.get("error", {}).get("message")):
                    failures.append(f"{method} {path} as {who}: {status} without a JSON error message: {reply}")
        check(not failures, "role matrix:\n  " + "\n  ".join(failures))
    finally:
        c.stop()


# ---- OpenAPI ------------------------------------------------------------------------------------------------

def case_openapi(bindir, tmp):
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        print("SKIPPED: schemathesis is not installed (scripts/setup.sh installs scripts/requirements.txt)")
        sys.exit(77)
    c = Coordinator(bindir, tmp)
    try:
        status, _, doc = c.request("GET", "/api/openapi.json")
        check(status == 200 and doc["openapi"].startswith("3."), f"the document is public: {status}")
        check("/api/v1/jobs" in doc["paths"] and "post" in doc["paths"]["/api/v1/jobs"], "jobs are documented")
        st = os.path.join(os.path.dirname(sys.executable), "st")
        cmd = [st, "run", f"http://127.0.0.1:{c.port}/api/openapi.json", "--url", f"http://127.0.0.1:{c.port}",
               "-H", f"Authorization: Bearer {c.admin_token}",
               "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
               "response_schema_conformance",
               "--max-examples", "8", "--phases", "examples,fuzzing", "--mode", "positive", "--seed", "1",
               "--request-timeout", "40",
               # The fuzzer learns names from responses: it would delete the admin it runs as (or revoke its
               # token) and see 401 for the rest. Those two operations are in the role matrix instead.
               "--exclude-operation-id", "delete_user", "--exclude-operation-id", "revoke_token",
               "--suppress-health-check", "all", "--no-color"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)  # its .schemathesis/ cache
        print(r.stdout[-6000:])
        print(r.stderr[-2000:], file=sys.stderr)
        check(r.returncode == 0, f"schemathesis found failures (exit {r.returncode}); see the output above")
        status, _, who = c.request("GET", "/api/v1/whoami", c.admin_token)
        check(status == 200, "the coordinator still serves after the fuzzing")
    finally:
        c.stop()


if __name__ == "__main__":
    run_cases({"jobs": case_jobs, "stream": case_stream, "roles": case_roles, "openapi": case_openapi},
              binary_flag="--bindir")
