// The job page: its state and timeline (attempts, preemptions), live curves (loss, eval loss, learning rate,
// tokens/s) that grow as metrics arrive (event stream, or the watch long poll), checkpoints, the spec, a log
// tail that follows, and Cancel (the server decides; a refusal is shown as the server worded it).
"use strict";
window.Anneal = window.Anneal || {};
Anneal.pages = Anneal.pages || {};

Anneal.pages.job = (main, ctx, jobId) => {
  const { el, clear, table, num, time, duration, bytes, state } = Anneal.dom;
  const api = Anneal.api;
  const id = encodeURIComponent(jobId);
  const stop = new AbortController();
  const charts = {
    loss: new Anneal.LineChart("chart-loss", "Training loss"),
    eval_loss: new Anneal.LineChart("chart-eval-loss", "Eval loss"),
    lr: new Anneal.LineChart("chart-lr", "Learning rate"),
    tokens_per_s: new Anneal.LineChart("chart-tokens", "Tokens / s"),
  };
  const head = el("div", { id: "job-head" });
  const message = el("p", { id: "action-message", class: "action-message", role: "status", hidden: true });
  const live = el("span", { id: "live-mode", class: "muted" });
  const cancel = el("button", { type: "button", id: "cancel", class: "action danger", onclick: onCancel }, "Cancel job");
  const timeline = el("ol", { id: "timeline", class: "timeline" });
  const checkpoints = el("div", { id: "checkpoints" });
  const spec = el("pre", { id: "spec", class: "spec" });
  const rankSelect = el("select", { id: "log-rank", onchange: () => logs.restart() });
  const logTail = el("pre", { id: "log-tail", class: "log" });
  const latest = el("p", { id: "latest-metrics", class: "summary" });
  clear(main).append(
    el("h1", {}, "Job ", el("code", {}, jobId)), head, el("div", { class: "actions" }, cancel, " ", live), message,
    el("h2", {}, "Training curves"), latest,
    el("div", { class: "charts" }, Object.values(charts).map((c) => c.node)),
    el("div", { class: "columns" },
       el("section", {}, el("h2", {}, "Timeline"), timeline),
       el("section", {}, el("h2", {}, "Checkpoints"), checkpoints)),
    el("h2", {}, "Log ", rankSelect), logTail,
    el("details", {}, el("summary", {}, "Spec (resolved)"), spec));

  let job = null;
  const events = [];

  function renderHead() {
    const r = job.resources || {};
    const facts = [
      ["State", state(job.state)], ["Name", job.name || "—"], ["Team", job.team || "—"], ["Owner", job.owner || "—"],
      ["Kind", (job.kind || "").replace("JOB_", "").toLowerCase() || "train"],
      ["Layout", `${num(r.nodes)} node(s) × ${num(r.gpus_per_node)} = ${num(r.world_size)} ranks (tp ${num(r.tensor_parallel) || 1}, pp ${num(r.pipeline_parallel) || 1}, dp ${num(r.data_parallel) || 1})`],
      ["Attempt", `${num(job.attempt)} of ${num(job.max_attempts) || "∞"}`], ["Preemptions", String(num(job.preemptions))],
      ["Submitted", time(job.submitted_at_ms)], ["Started", time(job.started_at_ms)], ["Finished", time(job.finished_at_ms)],
    ];
    if (job.state === "JOB_PENDING" && job.wait_reason) facts.push(["Waiting", job.wait_reason]);
    if (job.preempt_reason) facts.push(["Preempted", job.preempt_reason]);
    if (job.result) facts.push(["Result", job.result]);
    if (job.output_dir) facts.push(["Output", job.output_dir]);
    clear(head).append(el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k.toLowerCase() }, v)])));
    cancel.hidden = api.isTerminal(job.state);
    spec.textContent = job.spec_yaml || job.submitted_spec_yaml || "";
    if (rankSelect.options.length !== Math.max(1, num(r.world_size))) {
      Anneal.dom.append(clear(rankSelect), Array.from({ length: Math.max(1, num(r.world_size)) },
                                                    (_, i) => el("option", { value: i }, `rank ${i}`)));
    }
  }

  function addEvent(e) {
    events.push(e);
    const from = (e.from_state || "").replace("JOB_", "").toLowerCase();
    const kind = e.kind || "state";
    const preempt = e.to_state === "JOB_PREEMPTED" || /preempt/i.test(e.message || "");
    const item = el("li", { class: `event event-${kind}` + (preempt ? " event-preempt" : ""), "data-seq": num(e.seq) },
      el("span", { class: "event-time" }, time(e.time_ms)),
      el("span", { class: "event-attempt", title: `attempt ${num(e.attempt)}, epoch ${num(e.epoch)}` }, `#${num(e.attempt)}`),
      kind === "state" && e.to_state ? [from && from !== "state_unspecified" ? el("span", { class: "muted" }, from + " → ") : null, state(e.to_state)]
                                     : el("span", { class: "event-kind" }, kind),
      el("span", { class: "event-message" }, e.message || ""));
    timeline.append(item);
    if (kind === "checkpoint") loadCheckpoints();
  }

  function addMetric(m) {
    const values = m.values || {};
    const step = num(m.step);
    for (const [key, chart] of Object.entries(charts)) {
      const v = values[key] !== undefined ? values[key] : (key === "lr" ? values.learning_rate : undefined);
      if (v !== undefined) chart.add(step, Number(v));
    }
    scheduleDraw();
    const shown = ["loss", "eval_loss", "lr", "tokens_per_s", "grad_norm"].filter((k) => values[k] !== undefined)
      .map((k) => `${k} ${Number(values[k]).toPrecision(4)}`);
    latest.textContent = `step ${step}${num(m.total_steps) ? " / " + num(m.total_steps) : ""}` +
                         (shown.length ? " · " + shown.join(" · ") : "");
  }

  let drawQueued = false;
  function scheduleDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => { drawQueued = false; Object.values(charts).forEach((c) => c.draw()); });
  }

  async function loadCheckpoints() {
    try {
      const reply = api.unwrap(await api.get(`/api/v1/jobs/${id}`, stop.signal), "get_job");
      renderCheckpoints(reply.checkpoints || []);
    } catch (e) { /* the next checkpoint event retries */ }
  }

  function renderCheckpoints(list) {
    list.forEach((c) => { c.__key = c.step; });
    clear(checkpoints).append(table([
      { title: "Step", cell: (c) => String(num(c.step)) },
      { title: "State", cell: (c) => state(c.state) },
      { title: "Attempt", cell: (c) => String(num(c.attempt)) },
      { title: "Size", cell: (c) => bytes((c.files || []).reduce((s, f) => s + num(f.size_bytes), 0)) },
      { title: "Committed", cell: (c) => time(c.committed_at_ms) },
      { title: "Path", class: "path", cell: (c) => c.path || "" },
    ], list, "No checkpoints yet.", { id: "checkpoints-table" }));
  }

  async function onCancel() {
    cancel.disabled = true;
    try {
      const reply = api.unwrap(await api.post(`/api/v1/jobs/${id}/cancel`), "cancel");
      show(`Cancel requested: the job is ${(reply.state || "cancelling").replace("JOB_", "").toLowerCase()}.`, false);
    } catch (e) {
      show(`Cancel refused: ${e.message}`, true);
    } finally {
      cancel.disabled = false;
    }
  }

  function show(text, isError) {
    message.hidden = false;
    message.textContent = text;
    message.className = "action-message" + (isError ? " error" : "");
  }

  // The log tail: reads the rank's log from its start and keeps the last 400 lines, polling while the job runs.
  const logs = (() => {
    let offset = 0, lines = [], generation = 0;
    async function loop(gen) {
      while (!stop.signal.aborted && gen === generation) {
        let eof = false;
        try {
          const reply = api.unwrap(await api.get(`/api/v1/jobs/${id}/logs?rank=${rankSelect.value || 0}&offset=${offset}&max_bytes=65536`, stop.signal), "get_logs");
          if (gen !== generation) return;
          const text = reply.data || "";  // the API gives a log's bytes as text
          offset = num(reply.next_offset) || offset + text.length;
          eof = !!reply.eof || !text;
          if (text) {
            const atBottom = logTail.scrollTop + logTail.clientHeight >= logTail.scrollHeight - 8;
            lines = (lines.join("\n") + text).split("\n").slice(-400);
            logTail.textContent = lines.join("\n");
            if (atBottom) logTail.scrollTop = logTail.scrollHeight;
          }
        } catch (e) {
          if (stop.signal.aborted) return;
          logTail.textContent = lines.join("\n") + `\n[log unavailable: ${e.message}]`;
          eof = true;
        }
        if (eof && job && api.isTerminal(job.state)) return;
        if (eof) await api.sleep(2000, stop.signal);
      }
    }
    return {
      start() { generation++; loop(generation); },
      restart() { offset = 0; lines = []; logTail.textContent = ""; this.start(); },
    };
  })();

  (async () => {
    try {
      const reply = api.unwrap(await api.get(`/api/v1/jobs/${id}`, stop.signal), "get_job");
      job = reply.job || {};
      renderHead();
      for (const e of reply.events || []) addEvent(e);
      renderCheckpoints(reply.checkpoints || []);
      logs.start();
      const lastSeq = events.length ? num(events[events.length - 1].seq) : 0;
      await api.followJob(jobId, {
        job: (j) => { job = j; renderHead(); },
        event: addEvent,
        metric: addMetric,
        mode: (m) => { live.textContent = m === "stream" ? "● live (event stream)" : "● live (long poll)"; },
        error: (e) => { live.textContent = `reconnecting: ${e.message}`; },
      }, stop.signal, { event: lastSeq, step: 0 });
      if (!stop.signal.aborted) live.textContent = `ended ${job.finished_at_ms ? duration(Date.now() - num(job.finished_at_ms)) + " ago" : ""}`;
    } catch (e) {
      if (!stop.signal.aborted) ctx.failed(e);
    }
  })();
  return () => stop.abort();
};
