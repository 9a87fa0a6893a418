// The queue page (pending and preempted jobs in fair-share order, each with why it waits) and the jobs list.
"use strict";
window.Anneal = window.Anneal || {};
Anneal.pages = Anneal.pages || {};

Anneal.pages.queue = (main, ctx) => {
  const { el, clear, table, num, time, age, state, link } = Anneal.dom;
  const api = Anneal.api;
  const box = el("section", { id: "queue" });
  clear(main).append(el("h1", {}, "Queue"),
                     el("p", { class: "muted" }, "Pending jobs in the order the scheduler will try them, each with its reason."),
                     box);
  let timer = 0;
  async function refresh() {
    try {
      const queue = api.unwrap(await api.get("/api/v1/queue"), "queue");
      const jobs = (queue.jobs || []).slice().sort((a, b) => num(a.queue_position || 1e9) - num(b.queue_position || 1e9));
      jobs.forEach((j) => { j.__key = j.job_id; });
      clear(box).append(table([
        { title: "#", cell: (j) => String(num(j.queue_position) || "—") },
        { title: "Job", cell: (j) => link(`/ui/jobs/${encodeURIComponent(j.job_id)}`, j.name && j.name !== j.job_id ? `${j.job_id} (${j.name})` : j.job_id) },
        { title: "Team", cell: (j) => j.team || "" },
        { title: "Owner", cell: (j) => j.owner || "" },
        { title: "State", cell: (j) => state(j.state) },
        { title: "Priority", cell: (j) => String(num(j.priority)) },
        { title: "Size", cell: (j) => `${num((j.resources || {}).nodes)}×${num((j.resources || {}).gpus_per_node)}` },
        { title: "Waiting", cell: (j) => age(j.submitted_at_ms).replace(" ago", "") },
        { title: "Reason", class: "reason", cell: (j) => j.state === "JOB_PREEMPTED" ? (j.preempt_reason || "preempted") : (j.wait_reason || "—") },
        { title: "Estimated start", cell: (j) => time(j.estimated_start_ms) },
      ], jobs, "Nothing is waiting.", { id: "queue-table" }));
    } catch (e) {
      ctx.failed(e);
    }
  }
  refresh();
  timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
};

Anneal.pages.jobs = (main, ctx) => {
  const { el, clear, table, num, time, state, link } = Anneal.dom;
  const api = Anneal.api;
  const box = el("section", { id: "jobs" });
  clear(main).append(el("h1", {}, "Jobs"), box);
  let timer = 0;
  async function refresh() {
    try {
      const jobs = api.unwrap(await api.get("/api/v1/jobs?limit=100"), "list_jobs").jobs || [];
      jobs.forEach((j) => { j.__key = j.job_id; });
      clear(box).append(table([
        { title: "Job", cell: (j) => link(`/ui/jobs/${encodeURIComponent(j.job_id)}`, j.job_id) },
        { title: "Name", cell: (j) => j.name || "" },
        { title: "Team", cell: (j) => j.team || "" },
        { title: "Owner", cell: (j) => j.owner || "" },
        { title: "State", cell: (j) => state(j.state) },
        { title: "Attempt", cell: (j) => String(num(j.attempt)) },
        { title: "Submitted", cell: (j) => time(j.submitted_at_ms) },
        { title: "Result", class: "reason", cell: (j) => j.result || "" },
      ], jobs, "No jobs you may read.", { id: "jobs-table" }));
    } catch (e) {
      ctx.failed(e);
    }
  }
  refresh();
  timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
};
