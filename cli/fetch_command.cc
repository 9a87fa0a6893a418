// anneal fetch JOB [--path SUB] [--to DIR]: copies a job's outputs (or one checkpoint) from the node that holds
// them to this machine, straight from that node's agent (docs/transfers.md). The coordinator authorizes (the
// reader must be a viewer of the job's team) and signs a ticket; the bytes never pass through it. Every file is
// checked against its SHA-256; an interrupted fetch resumes where it stopped when run again with the same --to.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "transfer/client.h"

namespace anneal::cli {

namespace {

namespace fs = std::filesystem;

struct FetchOptions {
  std::string job;
  std::string path;  // inside output_dir; empty: all of it
  std::string to;    // default: ./<job id>
};

int Fetch(const GlobalOptions& g, const FetchOptions& o) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("fetch", client.status());
  pb::ClientRequest req;
  req.mutable_fetch_outputs()->set_job_id(o.job);
  req.mutable_fetch_outputs()->set_path(o.path);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("fetch", reply.status());
  const pb::FetchOutputsReply& where = reply->fetch_outputs();
  const std::string dest = fs::absolute(o.to.empty() ? o.job : o.to).lexically_normal().string();
  if (std::error_code ec; fs::exists(fs::symlink_status(dest, ec))) {
    return ReportError("fetch", AlreadyExistsError(fmt::format(
                                    "{} already exists: fetch never overwrites; choose another --to", dest)));
  }
  // The store (blobs and resumable partial files) sits beside the destination, on the same filesystem, so the
  // tree is made of links, and a second run with the same --to resumes.
  transfer::BlobStore store(fs::path(dest).parent_path().string() + "/.anneal-fetch-" +
                            fs::path(dest).filename().string());
  const transfer::Source source{
      .endpoint = where.endpoint(), .server_public_key = where.server_public_key(), .ticket = where.ticket()};
  auto manifest = transfer::FetchManifest(source, "");
  if (!manifest.ok()) {
    return ReportError("fetch", manifest.status().WithContext(fmt::format("listing {} on node {} ({})", where.path(),
                                                                          where.node_id(), where.endpoint())));
  }
  if (!g.json) {
    std::cerr << fmt::format("fetching {} file(s), {} bytes, from node {}:{} into {}\n", manifest->files.size(),
                             manifest->total_bytes(), where.node_id(), where.path(), dest);
  }
  if (Status st = store.Fetch(source, *manifest, dest); !st.ok()) {
    return ReportError("fetch", st.WithContext("copying " + where.path() + " from node " + where.node_id()));
  }
  std::error_code ec;
  fs::remove_all(store.root(), ec);  // complete: the links in `dest` keep the files
  if (g.json) {
    std::cout << fmt::format(
                     R"({{"job_id": "{}", "node_id": "{}", "path": "{}", "dest": "{}", "files": {}, "bytes": {}}})",
                     o.job, where.node_id(), where.path(), dest, manifest->files.size(), manifest->total_bytes())
              << "\n";
  } else {
    std::cout << dest << "\n";
  }
  return kExitOk;
}

}  // namespace

void AddFetchCommand(CLI::App& app, GlobalOptions& g, Action* action) {
  auto o = std::make_shared<FetchOptions>();
  auto* cmd = app.add_subcommand(
      "fetch", "Copy a job's outputs (or --path checkpoint-N) from the node holding them to this machine");
  cmd->add_option("job", o->job, "job id")->required();
  cmd->add_option("--path", o->path, "a path inside the job's output_dir (default: all of it)");
  cmd->add_option("--to", o->to, "destination directory (default: ./<job id>); must not exist (a rerun resumes)");
  cmd->callback([&g, o, action] { *action = [&g, o] { return Fetch(g, *o); }; });
}

}  // namespace anneal::cli
