// The web console's files as the HTTP router serves them (coordinator/web_console.h): no token needed, the
// right content types, a strict CSP on every answer, pages of the single-page app, refusals that say why, and
// the API routes still behind their token.
#include "coordinator/web_console.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "coordinator/http_router.h"

namespace anneal::coordinator {
namespace {

std::string Header(const HttpResponse& r, const std::string& name) {
  for (const auto& [key, value] : r.headers) {
    if (key == name) return value;
  }
  return "";
}

HttpResponse Get(const std::string& target, const std::string& method = "GET") {
  HttpRouteOptions options{.public_metrics = false,
                           .authenticate = [](std::string_view) { return PermissionDeniedError("no"); }};
  return RouteHttpRequest({.method = method, .target = target, .authorization = ""}, HttpSnapshot{}, options);
}

TEST(WebConsole, EveryFileOfWebIsEmbeddedWithItsBytes) {
  const auto& files = EmbeddedWebFiles();
  for (const char* name :
       {"index.html", "app.js", "api.js", "chart.js", "dom.js", "cluster.js", "queue.js", "job.js", "style.css"}) {
    bool found = false;
    for (const auto& f : files) found |= f.path == name && !f.bytes.empty();
    EXPECT_TRUE(found) << name << " is not embedded";
  }
}

TEST(WebConsole, EmbeddedBytesAreTheFilesOfWebExactly) {
  size_t on_disk = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(ANNEAL_WEB_DIR)) {
    if (!entry.is_regular_file()) continue;
    ++on_disk;
    const std::string relative = std::filesystem::relative(entry.path(), ANNEAL_WEB_DIR).string();
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    const EmbeddedFile* embedded = nullptr;
    for (const auto& f : EmbeddedWebFiles()) {
      if (f.path == relative) embedded = &f;
    }
    ASSERT_NE(embedded, nullptr) << relative << " is in web/ but not embedded";
    EXPECT_EQ(embedded->bytes, bytes.str()) << relative << " differs from web/" << relative;
  }
  EXPECT_EQ(EmbeddedWebFiles().size(), on_disk);
}

TEST(WebConsole, IndexIsServedWithoutATokenForRootAndEveryPage) {
  for (const std::string target : {"/", "/ui", "/ui/", "/ui/cluster", "/ui/queue", "/ui/jobs/j-0001?x=1"}) {
    HttpResponse r = Get(target);
    EXPECT_EQ(r.status, 200) << target;
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8") << target;
    EXPECT_NE(r.body.find("<script src=\"/ui/app.js\""), std::string::npos) << target;
  }
}

TEST(WebConsole, FilesHaveTheirContentTypeAndEveryAnswerAStrictPolicy) {
  HttpResponse js = Get("/ui/app.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(Get("/ui/style.css").content_type, "text/css; charset=utf-8");
  for (const std::string target : {"/", "/ui/app.js", "/ui/missing.js"}) {
    HttpResponse r = Get(target);
    const std::string csp = Header(r, "Content-Security-Policy");
    EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << target;
    EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << target;
    EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << target;
    EXPECT_EQ(Header(r, "X-Content-Type-Options"), "nosniff") << target;
    EXPECT_EQ(Header(r, "Cache-Control"), "no-cache") << target;
    EXPECT_EQ(Header(r, "Referrer-Policy"), "no-referrer") << target;
  }
}

TEST(WebConsole, NoPageHoldsInlineScriptOrAnUrlWithAToken) {
  for (const auto& f : EmbeddedWebFiles()) {
    if (f.path == "index.html") {
      EXPECT_EQ(f.bytes.find("<script>"), std::string_view::npos) << "inline script: the CSP would block it";
      EXPECT_EQ(f.bytes.find("style="), std::string_view::npos) << "inline style: the CSP would block it";
    }
    EXPECT_EQ(f.bytes.find("token="), std::string_view::npos) << f.path << " puts a token in a URL";
    EXPECT_EQ(f.bytes.find("localStorage"), std::string_view::npos) << f.path << " keeps the token past the tab";
  }
}

TEST(WebConsole, MissingFileIsNotFoundNamingIt) {
  HttpResponse r = Get("/ui/nothing.js");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("no file 'nothing.js'"), std::string::npos) << r.body;
  HttpResponse up = Get("/ui/../coordinator.yaml");
  EXPECT_EQ(up.status, 404);
  EXPECT_NE(up.body.find("'..'"), std::string::npos) << up.body;
  EXPECT_EQ(Get("/ui/app.js").status, 200);  // still serves afterwards
}

TEST(WebConsole, WritingMethodIsRefusedNamingIt) {
  HttpResponse r = Get("/ui/app.js", "POST");
  EXPECT_EQ(r.status, 405);
  EXPECT_NE(r.body.find("not POST"), std::string::npos) << r.body;
  HttpResponse head = Get("/ui/app.js", "HEAD");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
}

TEST(WebConsole, ApiRoutesStillNeedTheirToken) {
  EXPECT_EQ(Get("/api/jobs").status, 401);
  EXPECT_EQ(Get("/metrics").status, 401);
  EXPECT_EQ(Get("/uix").status, 401);  // not a console path: the API's rules apply
}

TEST(WebConsole, ContentTypesByExtension) {
  EXPECT_EQ(WebContentType("a/b.svg"), "image/svg+xml");
  EXPECT_EQ(WebContentType("x.json"), "application/json");
  EXPECT_EQ(WebContentType("x.bin"), "application/octet-stream");
}

}  // namespace
}  // namespace anneal::coordinator
