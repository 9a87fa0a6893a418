// anneal-coordinator: the cluster's job queue, scheduler, node registry and checkpoint registry.
// docs/coordinator.md describes the flags, the config file and the protocol; docs/operations.md how to run it.
#include <cstdio>
#include <memory>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/log.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "coordinator/config.h"
#include "coordinator/coordinator.h"
#include "coordinator/http.h"
#include "coordinator/server.h"
#include "storage/state_store.h"

int main(int argc, char** argv) {
  using namespace anneal::coordinator;
  CLI::App app{"anneal-coordinator: queues jobs, places them on nodes, restarts them on failure, keeps all "
               "state in RocksDB"};
  app.set_version_flag("--version", std::string(anneal::Version()));
  CoordinatorConfig flags;
  std::string config_file;
  app.add_option("--config", config_file, "YAML config file (flags override it)")->check(CLI::ExistingFile);
  auto* bind = app.add_option("--bind", flags.bind, "ZeroMQ endpoint for agents and clients")
                   ->default_val(flags.bind);
  auto* state_dir = app.add_option("--state-dir", flags.state_dir, "RocksDB state directory")
                        ->default_val(flags.state_dir);
  auto* token = app.add_option("--token", flags.token, "admin token clients must present (empty: no check)");
  auto* interval = app.add_option("--heartbeat-interval-ms", flags.heartbeat_interval_ms,
                                  "heartbeat interval told to agents")->default_val(flags.heartbeat_interval_ms);
  auto* timeout = app.add_option("--heartbeat-timeout-ms", flags.heartbeat_timeout_ms,
                                 "a node silent this long is down")->default_val(flags.heartbeat_timeout_ms);
  auto* stop_timeout = app.add_option("--stop-timeout-ms", flags.stop_timeout_ms,
                                      "an unconfirmed StopTask counts as done after this")
                           ->default_val(flags.stop_timeout_ms);
  auto* log_timeout = app.add_option("--log-fetch-timeout-ms", flags.log_fetch_timeout_ms,
                                     "GetLogs waits this long for the agent")->default_val(flags.log_fetch_timeout_ms);
  auto* level = app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error, critical, off")
                    ->default_val(flags.log_level);
  auto* http = app.add_option("--http-bind", flags.http_bind,
                              "HOST:PORT for GET /metrics and GET /api/jobs (default: off)");
  CLI11_PARSE(app, argc, argv);

  CoordinatorConfig config;
  if (!config_file.empty()) {
    if (auto st = LoadConfigFile(config_file, &config); !st.ok()) {
      std::fprintf(stderr, "anneal-coordinator: %s\n", st.message().c_str());
      return 2;
    }
  }
  if (bind->count()) config.bind = flags.bind;
  if (state_dir->count()) config.state_dir = flags.state_dir;
  if (token->count()) config.token = flags.token;
  if (interval->count()) config.heartbeat_interval_ms = flags.heartbeat_interval_ms;
  if (timeout->count()) config.heartbeat_timeout_ms = flags.heartbeat_timeout_ms;
  if (stop_timeout->count()) config.stop_timeout_ms = flags.stop_timeout_ms;
  if (log_timeout->count()) config.log_fetch_timeout_ms = flags.log_fetch_timeout_ms;
  if (level->count()) config.log_level = flags.log_level;
  if (http->count()) config.http_bind = flags.http_bind;
  if (auto st = ValidateConfig(config); !st.ok()) {
    std::fprintf(stderr, "anneal-coordinator: %s\n", st.message().c_str());
    return 2;
  }
  if (auto st = anneal::InitLogging("anneal-coordinator", config.log_level); !st.ok()) {
    std::fprintf(stderr, "anneal-coordinator: %s\n", st.message().c_str());
    return 2;
  }
  if (!config.path_policy) {
    // Without one, a spec could name any path the agents can reach (/, other teams' data): refuse to start.
    std::fprintf(stderr,
                 "anneal-coordinator: no path_policy in the config file: set the roots each team's jobs may read "
                 "models and datasets from and write outputs to (docs/coordinator.md, \"Path policy\"); "
                 "`anneal up` writes one for its local cluster\n");
    return 2;
  }
  anneal::InstallShutdownHandlers();

  auto store = anneal::storage::StateStore::Open(config.state_dir);
  if (!store.ok()) {
    spdlog::critical("{}", store.status().ToString());
    return 1;
  }
  SystemClock clock;
  CoordinatorOptions options;
  options.admin_token = config.token;
  options.heartbeat_interval_ms = config.heartbeat_interval_ms;
  options.heartbeat_timeout_ms = config.heartbeat_timeout_ms;
  options.stop_timeout_ms = config.stop_timeout_ms;
  options.log_fetch_timeout_ms = config.log_fetch_timeout_ms;
  options.path_policy = std::make_shared<const anneal::jobspec::PathPolicy>(*config.path_policy);
  Coordinator core(options, store->get(), &clock);
  if (auto st = core.Recover(); !st.ok()) {
    spdlog::critical("recovering state from {}: {}", config.state_dir, st.ToString());
    return 1;
  }
  Server server({.bind = config.bind}, &core, &clock);
  if (auto st = server.Bind(); !st.ok()) {
    spdlog::critical("{}", st.ToString());
    return 1;
  }
  std::unique_ptr<HttpServer> http_server;
  if (!config.http_bind.empty()) {
    http_server = std::make_unique<HttpServer>();
    if (auto st = http_server->Start(config.http_bind); !st.ok()) {
      spdlog::critical("{}", st.ToString());
      return 1;
    }
    server.SetRoundHook([&] { http_server->Publish(core); });
  }
  spdlog::info("anneal-coordinator {} ready (state {}, heartbeat timeout {} ms)", anneal::Version(),
               config.state_dir, config.heartbeat_timeout_ms);
  // Tests and scripts wait for this line on stdout to know the endpoint (port 0 binds are resolved).
  std::printf("listening %s\n", server.endpoint().c_str());
  if (http_server) std::printf("http %u\n", static_cast<unsigned>(http_server->port()));
  std::fflush(stdout);
  auto st = server.Run();
  if (http_server) http_server->Stop();
  if (!st.ok()) {
    spdlog::critical("{}", st.ToString());
    return 1;
  }
  spdlog::info("shut down cleanly");
  return 0;
}
