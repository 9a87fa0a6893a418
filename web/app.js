// The console's shell: login with an API token (kept in this tab's sessionStorage only), who am I, the
// navigation between pages (paths under /ui/, no token in any URL), and errors shown in a banner.
"use strict";
window.Anneal = window.Anneal || {};

(() => {
  const { el, clear } = Anneal.dom;
  const api = Anneal.api;
  const main = document.getElementById("main");
  const banner = document.getElementById("banner");
  const whoami = document.getElementById("whoami");
  const logout = document.getElementById("logout");
  let cleanup = null;
  let me = null;

  const ctx = {
    // A page's request failed: a refused token sends the user back to the login page; other errors show.
    failed(e) {
      if (e.status === 401) { api.setToken(""); me = null; navigate("/ui/login", "Your token was refused: " + e.message); return; }
      showBanner(e.message);
    },
  };

  function showBanner(text) {
    banner.hidden = !text;
    banner.textContent = text || "";
  }

  function roles(user) {
    const parts = Object.entries(user.teams || {}).map(([team, role]) => `${team}: ${String(role).replace("ROLE_", "").toLowerCase()}`);
    if (user.cluster_admin) parts.unshift("cluster admin");
    return parts.join(", ") || "no team";
  }

  function loginPage(reason) {
    const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true,
                                placeholder: "ant_…", size: 48 });
    const error = el("p", { id: "login-error", class: "action-message error", hidden: !reason }, reason || "");
    const form = el("form", { id: "login", class: "login" },
      el("h1", {}, "Log in"),
      el("p", {}, "Paste an API token (", el("code", {}, "anneal token create"), "). It stays in this tab only."),
      el("label", { for: "token" }, "API token "), input, " ", el("button", { type: "submit" }, "Log in"), error);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      api.setToken(input.value.trim());
      try {
        await loadMe();
        navigate("/ui/cluster");
      } catch (e) {
        api.setToken("");
        error.hidden = false;
        error.textContent = "Login refused: " + e.message;
      }
    });
    clear(main).append(form);
    input.focus();
    return null;
  }

  async function loadMe() {
    const reply = api.unwrap(await api.get("/api/v1/whoami"), "whoami");
    me = reply.user || {};
    whoami.textContent = "";
    whoami.append(el("strong", { id: "user-name" }, me.name || "?"), " ", el("span", { id: "user-roles", class: "muted" }, `(${roles(me)})`));
    logout.hidden = false;
    return me;
  }

  function navigate(path, reason) {
    if (location.pathname !== path) history.pushState({}, "", path);
    route(reason);
  }

  async function route(reason) {
    if (cleanup) { cleanup(); cleanup = null; }
    showBanner("");
    const path = location.pathname.replace(/\/+$/, "");
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", path.startsWith(a.getAttribute("href")));
    if (!api.token() || path === "/ui/login") {
      whoami.textContent = "";
      logout.hidden = true;
      if (api.token() && path === "/ui/login") { navigate("/ui/cluster"); return; }
      if (path !== "/ui/login") history.replaceState({}, "", "/ui/login");
      loginPage(reason);
      return;
    }
    if (!me) {
      try { await loadMe(); } catch (e) { ctx.failed(e); return; }
    }
    const job = path.match(/^\/ui\/jobs\/(.+)$/);
    if (job) cleanup = Anneal.pages.job(main, ctx, decodeURIComponent(job[1]));
    else if (path === "/ui/queue") cleanup = Anneal.pages.queue(main, ctx);
    else if (path === "/ui/jobs") cleanup = Anneal.pages.jobs(main, ctx);
    else cleanup = Anneal.pages.cluster(main, ctx);
    document.title = "Anneal · " + (job ? "job " + decodeURIComponent(job[1]) : path.replace("/ui/", "") || "cluster");
  }

  // In-page navigation for every link marked data-nav.
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest && ev.target.closest("a[data-nav]");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    navigate(a.getAttribute("href"));
  });
  window.addEventListener("popstate", () => route());
  logout.addEventListener("click", () => { api.setToken(""); me = null; navigate("/ui/login"); });
  route();
})();
