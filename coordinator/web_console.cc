#include "coordinator/web_console.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>

namespace anneal::coordinator {
namespace {

constexpr std::string_view kIndex = "index.html";

const EmbeddedFile* FindFile(std::string_view path) {
  for (const EmbeddedFile& file : EmbeddedWebFiles()) {
    if (file.path == path) return &file;
  }
  return nullptr;
}

HttpResponse WithConsoleHeaders(HttpResponse r) {
  r.headers.emplace_back("Content-Security-Policy", std::string(kWebConsoleCsp));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Cache-Control", "no-cache");
  return r;
}

HttpResponse FileResponse(const EmbeddedFile& file, bool head) {
  HttpResponse r;
  r.content_type = std::string(WebContentType(file.path));
  if (!head) r.body = std::string(file.bytes);
  return WithConsoleHeaders(std::move(r));
}

HttpResponse Plain(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return WithConsoleHeaders(std::move(r));
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string_view WebContentType(std::string_view path) {
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {{".html", "text/html; charset=utf-8"},
                                                                             {".js", "text/javascript; charset=utf-8"},
                                                                             {".css", "text/css; charset=utf-8"},
                                                                             {".svg", "image/svg+xml"},
                                                                             {".json", "application/json"},
                                                                             {".png", "image/png"},
                                                                             {".ico", "image/x-icon"},
                                                                             {".txt", "text/plain; charset=utf-8"}};
  for (const auto& [ext, type] : kTypes) {
    if (EndsWith(path, ext)) return type;
  }
  return "application/octet-stream";
}

std::optional<HttpResponse> ServeWebConsole(const HttpRequest& request) {
  const std::string_view path = std::string_view(request.target).substr(0, request.target.find('?'));
  const bool console = path == "/" || path == "/ui" || path.starts_with("/ui/");
  if (!console) return std::nullopt;
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head) {
    return Plain(405, fmt::format("405 method not allowed: the web console's files are only read (GET), not {}\n",
                                  request.method.substr(0, 16)));
  }
  const std::string_view rest = path.size() > 4 ? path.substr(4) : std::string_view();  // after "/ui/"
  const std::string_view last = rest.substr(std::min(rest.size(), rest.rfind('/') + 1));
  // A page of the single-page console (no dot in the last segment): its script reads the path.
  if (rest.empty() || last.find('.') == std::string_view::npos) {
    const EmbeddedFile* index = FindFile(kIndex);
    if (index == nullptr) return Plain(500, "500: this build embedded no web/index.html\n");
    return FileResponse(*index, head);
  }
  if (rest.find("..") != std::string_view::npos) {
    return Plain(404, "404 not found: '..' is not a web console path\n");
  }
  if (const EmbeddedFile* file = FindFile(rest)) return FileResponse(*file, head);
  return Plain(404, fmt::format("404 not found: the web console has no file '{}'\n", rest.substr(0, 200)));
}

}  // namespace anneal::coordinator
