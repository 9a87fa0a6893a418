// The REST API client of the console: the token (sessionStorage, sent as `Authorization: Bearer`), JSON
// requests with the server's {"error": {"code", "message"}} turned into ApiError, and a job's live updates
// (server-sent events read through fetch, since EventSource cannot send a header; the watch long poll when
// the stream is not available).
"use strict";
window.Anneal = window.Anneal || {};

Anneal.api = (() => {
  const TOKEN_KEY = "anneal.token";

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function setToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  function headers(extra) {
    return Object.assign({ Authorization: "Bearer " + token(), Accept: "application/json" }, extra || {});
  }

  async function errorOf(res) {
    const text = await res.text();
    try {
      const e = JSON.parse(text).error;
      if (e) return new ApiError(res.status, e.code || "HTTP_" + res.status, e.message || text);
    } catch (_) { /* not JSON: the plain text is the message */ }
    return new ApiError(res.status, "HTTP_" + res.status, text.trim() || res.statusText);
  }

  // method, path ("/api/v1/jobs"), optional body: a string is sent as YAML, an object as JSON.
  async function request(method, path, body, signal) {
    const extra = {};
    let payload;
    if (typeof body === "string") { extra["Content-Type"] = "text/yaml"; payload = body; }
    else if (body !== undefined) { extra["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    let res;
    try {
      res = await fetch(path, { method, headers: headers(extra), body: payload, cache: "no-store",
                                credentials: "omit", signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "UNAVAILABLE", "the coordinator did not answer (" + e.message + ")");
    }
    if (!res.ok) throw await errorOf(res);
    const text = await res.text();
    return text ? JSON.parse(text) : {};
  }

  const get = (path, signal) => request("GET", path, undefined, signal);
  const post = (path, body) => request("POST", path, body === undefined ? {} : body);

  // A ClientReply's body may come wrapped ({"get_job": {...}}) or bare; either reads the same.
  function unwrap(reply, key) { return reply && reply[key] !== undefined && typeof reply[key] === "object" ? reply[key] : reply; }

  // Reads server-sent events from `path` until the stream ends; onEvent(type, data) per event.
  // lastEventId resumes a stream (the Last-Event-ID header, as EventSource would send it).
  async function readEvents(path, onEvent, signal, lastEventId) {
    const extra = { Accept: "text/event-stream" };
    if (lastEventId) extra["Last-Event-ID"] = lastEventId;
    const res = await fetch(path, { headers: headers(extra), cache: "no-store",
                                    credentials: "omit", signal });
    if (!res.ok) throw await errorOf(res);
    if (!res.body || !(res.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      throw new ApiError(res.status, "NOT_A_STREAM", "the server did not answer with an event stream");
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) type = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(type, JSON.parse(data.join("\n")));
      }
    }
  }

  // Follows a job: handlers.job(JobRecord), handlers.event(JobEvent), handlers.metric(MetricPoint),
  // handlers.mode("stream" | "poll"), handlers.error(e). Stops when the job ends or signal aborts. Resumes
  // after the last event seq and metric step seen (start: {event, step} already shown; 0: from the
  // beginning), so nothing is delivered twice.
  async function followJob(jobId, handlers, signal, start) {
    const seen = { event: (start && start.event) || 0, step: (start && start.step) || 0 };
    const id = encodeURIComponent(jobId);
    const cursor = () => `after_event_seq=${seen.event}&after_metric_step=${seen.step}`;
    const deliver = (type, data) => {
      if (type === "job") { handlers.job(data); }
      else if (type === "event") {
        const seq = Number(data.seq || 0);
        if (seq <= seen.event) return;
        seen.event = seq;
        handlers.event(data);
      } else if (type === "metric") {
        seen.step = Math.max(seen.step, Number(data.step || 0));
        handlers.metric(data);
      } else if (type === "end") {
        terminal.value = true;  // the job is over; the last watch round below fetches its final record
      } else if (type === "error") {
        const e = data.error || {};
        throw new ApiError(0, e.code || "UNAVAILABLE", e.message || "the stream failed");
      }
    };
    const terminal = { value: false };
    const onJob = handlers.job;
    handlers.job = (job) => { terminal.value = isTerminal(job.state); onJob(job); };
    let streamWorks = true;
    while (!signal.aborted && !terminal.value) {
      try {
        if (streamWorks) {
          handlers.mode("stream");
          await readEvents(`/api/v1/jobs/${id}/stream`, deliver, signal, `${seen.event}:${seen.step}`);
          await sleep(500, signal);
          // Ended: the job is over, or the server closed it; one watch round refreshes the record either way.
        }
        handlers.mode("poll");
        const reply = unwrap(await get(`/api/v1/jobs/${id}/watch?${cursor()}&timeout_ms=15000`, signal), "watch");
        for (const e of reply.events || []) deliver("event", e);
        for (const m of reply.metrics || []) deliver("metric", m);
        if (reply.job) deliver("job", reply.job);
      } catch (e) {
        if (signal.aborted || e.name === "AbortError") return;
        if (streamWorks && ([404, 405, 429, 501].includes(e.status) || e.code === "NOT_A_STREAM")) {
          streamWorks = false;  // no stream here (or this token's streams are all taken): long poll from now on
          continue;
        }
        if (handlers.error) handlers.error(e);
        await sleep(2000, signal);
      }
    }
  }

  const TERMINAL = new Set(["JOB_SUCCEEDED", "JOB_FAILED", "JOB_CANCELLED"]);
  function isTerminal(state) { return TERMINAL.has(state); }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  return { ApiError, token, setToken, request, get, post, unwrap, followJob, isTerminal, sleep };
})();
