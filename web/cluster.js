// The cluster page: nodes (state, slots and GPUs in use, each GPU's utilization and memory as the agents last
// reported them), a drain action, and each team's usage against its quotas. Refreshes every 5 s.
"use strict";
window.Anneal = window.Anneal || {};
Anneal.pages = Anneal.pages || {};

Anneal.pages.cluster = (main, ctx) => {
  const { el, clear, table, num, age, bytes, state, meter } = Anneal.dom;
  const api = Anneal.api;
  const summary = el("p", { id: "cluster-summary", class: "summary" });
  const nodesBox = el("section", { id: "nodes" });
  const teamsBox = el("section", { id: "teams" });
  const message = el("p", { id: "action-message", class: "action-message", role: "status", hidden: true });
  clear(main).append(el("h1", {}, "Cluster"), summary, message, el("h2", {}, "Nodes"), nodesBox,
                     el("h2", {}, "Teams"), teamsBox);

  function gpuCell(node) {
    const gpus = (node.inventory && node.inventory.gpus) || [];
    if (!gpus.length) return el("span", { class: "muted" }, "CPU only");
    return el("div", { class: "gpus" }, gpus.map((g) => {
      const total = num(g.memory_total_bytes), used = num(g.memory_used_bytes);
      return el("div", { class: "gpu", "data-gpu": num(g.index) },
        el("span", { class: "gpu-name", title: g.uuid || "" }, `${num(g.index)}: ${g.name || "GPU"}`),
        meter(num(g.utilization_percent) / 100, `${num(g.utilization_percent)}% util`),
        meter(total ? used / total : 0, `${bytes(used)} / ${bytes(total)}`),
        g.temperature_c ? el("span", { class: "muted" }, `${num(g.temperature_c)} °C`) : null);
    }));
  }

  async function drain(node) {
    const undrain = node.state === "NODE_DRAINING";
    try {
      const reply = api.unwrap(await api.post(`/api/v1/nodes/${encodeURIComponent(node.node_id)}/drain`,
                                              { undrain }), "drain");
      show(`${node.node_id}: ${(reply.state || "").replace("NODE_", "").toLowerCase() || "done"}`, false);
      refresh();
    } catch (e) {
      show(`${undrain ? "Undrain" : "Drain"} ${node.node_id} refused: ${e.message}`, true);
    }
  }

  function show(text, isError) {
    message.hidden = false;
    message.textContent = text;
    message.className = "action-message" + (isError ? " error" : "");
  }

  function renderNodes(nodes) {
    let slots = 0, used = 0, gpus = 0, gpusUsed = 0, up = 0;
    for (const n of nodes) {
      const inv = n.inventory || {};
      slots += num(inv.slots); used += num(n.slots_used);
      if ((inv.gpus || []).length) { gpus += inv.gpus.length; gpusUsed += num(n.slots_used); }
      if (n.state === "NODE_UP") up++;
    }
    summary.textContent = `${nodes.length} node(s), ${up} up · slots in use ${used} / ${slots}` +
                          (gpus ? ` · GPUs in use ${gpusUsed} / ${gpus}` : " · no GPUs");
    nodes.forEach((n) => { n.__key = n.node_id; });
    clear(nodesBox).append(table([
      { title: "Node", cell: (n) => el("span", { title: (n.inventory || {}).hostname || "" }, n.node_id) },
      { title: "State", cell: (n) => state(n.state) },
      { title: "Slots in use", cell: (n) => meter(num((n.inventory || {}).slots) ? num(n.slots_used) / num(n.inventory.slots) : 0,
                                                  `${num(n.slots_used)} / ${num((n.inventory || {}).slots)}`) },
      { title: "GPUs (utilization, memory)", cell: gpuCell },
      { title: "Heartbeat", cell: (n) => age(n.last_heartbeat_ms) },
      { title: "Labels", cell: (n) => Object.entries((n.inventory || {}).labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") },
      { title: "", cell: (n) => n.state === "NODE_DOWN" ? "" :
          el("button", { type: "button", class: "action", "data-action": "drain", onclick: () => drain(n) },
             n.state === "NODE_DRAINING" ? "Undrain" : "Drain") },
    ], nodes, "No nodes have registered.", { id: "nodes-table" }));
  }

  function renderTeams(queue) {
    const held = queue.slots_held || {};
    const usage = Object.fromEntries((queue.usage || []).map((u) => [u.team, num(u.decayed_slot_seconds)]));
    const teams = (queue.teams || []).map((t) => Object.assign({ __key: t.name }, t));
    clear(teamsBox).append(table([
      { title: "Team", cell: (t) => t.name },
      { title: "Slots held", cell: (t) => String(num(held[t.name])) },
      { title: "Quota (guaranteed / max)", cell: (t) => {
          const quotas = t.quotas || [];
          if (!quotas.length) return el("span", { class: "muted" }, "no quota: shares what is free");
          return el("div", {}, quotas.map((q) => {
            const cap = num(q.max) || num(q.guaranteed);
            return el("div", { class: "quota" }, el("span", {}, (q.label || "all nodes") + ": "),
                      meter(cap ? num(held[t.name]) / cap : 0,
                            `${num(held[t.name])} held · ${num(q.guaranteed)} guaranteed / ${num(q.max) || "∞"} max`));
          }));
        } },
      { title: "Weight", cell: (t) => String(t.weight || 1) },
      { title: "Fair-share usage", cell: (t) => `${Math.round(usage[t.name] || 0)} slot·s` },
    ], teams, "No teams you may read.", { id: "teams-table" }));
  }

  let timer = 0;
  async function refresh() {
    try {
      const [nodes, queue] = await Promise.all([api.get("/api/v1/nodes"), api.get("/api/v1/queue")]);
      renderNodes(api.unwrap(nodes, "list_nodes").nodes || []);
      renderTeams(api.unwrap(queue, "queue"));
    } catch (e) {
      ctx.failed(e);
    }
  }
  refresh();
  timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
};
