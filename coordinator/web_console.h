// The web console: static files (web/) embedded into the coordinator at build time (cmake/EmbedFiles.cmake
// generates web_assets.cc) and served on the HTTP port next to the API. The pages call the REST API
// (/api/v1/...) with the token the user typed, kept in the tab's sessionStorage and sent as
// `Authorization: Bearer`; the files themselves hold no data, so they are served without a token.
//
// Routes (GET; HEAD answers the same headers):
//   /, /ui, /ui/          index.html (the console's single page)
//   /ui/<page>[/...]      index.html too when the last segment has no dot (the page's script reads the path:
//                         /ui/cluster, /ui/queue, /ui/jobs/<id>, /ui/login)
//   /ui/<file>            the embedded file web/<file> (app.js, style.css, ...); 404 naming it when absent
// Every answer carries a strict Content-Security-Policy (scripts, styles and fetches from this origin only; no
// inline script, no frames), X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer and
// Cache-Control: no-cache (files are small; a browser revalidates so an upgraded coordinator serves its own
// console at once). Another method on these paths is 405.
//
// Outcomes: ServeWebConsole returns nullopt for a path that is not the console's (the router goes on to the
// API routes), a response otherwise.
// Thread-safety: pure over immutable embedded data; call from any thread.
//
// Example:
//   if (auto page = ServeWebConsole({.method = "GET", .target = "/ui/app.js"})) return *page;  // 200 JS
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "coordinator/http_router.h"

namespace anneal::coordinator {

// One embedded file: its path under web/ ("app.js", "pages/job.js") and its bytes (static storage).
struct EmbeddedFile {
  std::string_view path;
  std::string_view bytes;
};

// The embedded web/ files, sorted by path (generated: build/coordinator/web_assets.cc).
const std::vector<EmbeddedFile>& EmbeddedWebFiles();

// The Content-Type of a file name by its extension ("application/octet-stream" when unknown).
std::string_view WebContentType(std::string_view path);

// The console's answer to a request, or nullopt when the path is not the console's.
std::optional<HttpResponse> ServeWebConsole(const HttpRequest& request);

// The headers every console answer carries (CSP and friends), for tests and the docs.
inline constexpr std::string_view kWebConsoleCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

}  // namespace anneal::coordinator
