"""A real anneal-coordinator for the REST API tests: RocksDB in a temp dir, CurveZMQ on, its HTTP port on,
the bootstrapped cluster admin's token, and the real `anneal` CLI to make users, teams and tokens."""
import http.client
import json
import os
import re
import subprocess
import time


class Coordinator:
    def __init__(self, bindir, tmp, extra_config=""):
        self.bindir = bindir
        self.tmp = tmp
        self.admin_config = os.path.join(tmp, "admin.config")
        config = os.path.join(tmp, "coordinator.yaml")
        with open(config, "w") as f:
            f.write(f"""bind: tcp://127.0.0.1:0
state_dir: {tmp}/state
http_bind: 127.0.0.1:0
bootstrap_admin_config: {self.admin_config}
log_level: warn
path_policy: {{default: {{models: [/], datasets: [/], outputs: [/]}}}}
{extra_config}""")
        self.log = open(os.path.join(tmp, "coordinator.log"), "w")
        self.proc = subprocess.Popen([os.path.join(bindir, "anneal-coordinator"), "--config", config],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = None
        deadline = time.time() + 30
        while self.port is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"anneal-coordinator exited ({self.proc.poll()}); see {tmp}/coordinator.log")
            if line.startswith("listening "):
                self.endpoint = line.split()[1]
            if line.startswith("server-key "):
                self.server_key = line.split()[1]
            m = re.match(r"http (\d+)", line)
            if m:
                self.port = int(m.group(1))
            if time.time() > deadline:
                raise RuntimeError("anneal-coordinator did not print its HTTP port within 30 s")
        with open(self.admin_config) as f:
            self.admin_token = re.search(r'token:\s*"?([^"\s]+)', f.read()).group(1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def cli(self, *args, token=None, check=True):
        cmd = [os.path.join(self.bindir, "anneal"), "--coordinator", self.endpoint, "--server-key", self.server_key,
               "--token", token or self.admin_token, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return r.stdout

    def token_for(self, user):
        out = self.cli("token", "create", "--user", user)
        return re.search(r"(ant_\S+)", out).group(1)

    def request(self, method, path, token=None, body=None, content_type="application/json", headers=None,
                timeout=30):
        """(status, headers dict, parsed JSON or text) of one HTTP request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
            h["Content-Type"] = content_type
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
        conn.close()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
