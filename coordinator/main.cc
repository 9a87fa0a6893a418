// anneal-coordinator: the cluster's job queue, scheduler, node registry and checkpoint registry.
// docs/coordinator.md describes the flags, the config file and the protocol; docs/operations.md how to run it.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <thread>

#include "common/client_config.h"
#include "common/log.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "coordinator/backup.h"
#include "coordinator/bootstrap.h"
#include "coordinator/config.h"
#include "coordinator/coordinator.h"
#include "coordinator/http.h"
#include "coordinator/server.h"
#include "protocol/curve.h"
#include "storage/state_store.h"
#include "transfer/ticket.h"

namespace {

// The address a client on this host uses for `endpoint` (a wildcard bind is reached on loopback).
std::string ClientAddress(std::string endpoint) {
  for (const char* wildcard : {"tcp://0.0.0.0:", "tcp://*:"}) {
    if (endpoint.rfind(wildcard, 0) == 0) return "tcp://127.0.0.1:" + endpoint.substr(std::string(wildcard).size());
  }
  return endpoint;
}

// A fresh cluster (no user) gets its cluster admin. The client config is written before the admin is committed:
// a crash in between leaves a token that does not exist yet, and the next start bootstraps again and rewrites
// it; the other order could leave an admin whose token nobody has.
anneal::Status BootstrapIfFresh(anneal::coordinator::Coordinator& core, const std::string& endpoint,
                                const std::string& server_key, const std::string& config_path) {
  if (core.HasUsers()) return anneal::Status::Ok();
  if (config_path.empty()) {
    spdlog::warn(
        "this cluster has no user yet and no --bootstrap-admin-config was given: nobody can use it; "
        "restart once with --bootstrap-admin-config ~/.anneal/config");
    return anneal::Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string token, core.BootstrapAdmin("admin"));
  RETURN_IF_ERROR(anneal::WriteClientConfigFile(
      config_path, {.coordinator = ClientAddress(endpoint), .token = token, .server_key = server_key}));
  RETURN_IF_ERROR(core.Flush().status());
  spdlog::info("bootstrapped the cluster admin 'admin'; its client config is {}", config_path);
  return anneal::Status::Ok();
}

// `anneal-coordinator backup`: the state directory from --state-dir, else the config file's state_dir.
int RunBackupCommand(const std::string& config_file, std::string state_dir, const std::string& out) {
  if (state_dir.empty() && !config_file.empty()) {
    anneal::coordinator::CoordinatorConfig config;
    if (auto st = anneal::coordinator::LoadConfigFile(config_file, &config); !st.ok()) {
      std::fprintf(stderr, "anneal-coordinator backup: %s\n", st.message().c_str());
      return 2;
    }
    state_dir = config.state_dir;
  }
  if (state_dir.empty()) {
    std::fprintf(stderr, "anneal-coordinator backup: give --state-dir DIR or --config FILE (its state_dir)\n");
    return 2;
  }
  auto result = anneal::coordinator::TakeBackup(state_dir, out);
  if (!result.ok()) {
    std::fprintf(stderr, "anneal-coordinator backup: %s\n", result.status().ToString().c_str());
    return 1;
  }
  std::printf("backup of %s written to %s (sequence %llu, %s)\n", state_dir.c_str(), out.c_str(),
              static_cast<unsigned long long>(result->sequence),
              result->online ? "taken by the running coordinator" : "coordinator not running");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace anneal::coordinator;
  CLI::App app{
      "anneal-coordinator: queues jobs, places them on nodes, restarts them on failure, keeps all "
      "state in RocksDB"};
  app.set_version_flag("--version", std::string(anneal::Version()));
  CoordinatorConfig flags;
  std::string config_file;
  app.add_option("--config", config_file, "YAML config file (flags override it)")->check(CLI::ExistingFile);
  auto* bind = app.add_option("--bind", flags.bind, "ZeroMQ endpoint for agents and clients")->default_val(flags.bind);
  auto* state_dir =
      app.add_option("--state-dir", flags.state_dir, "RocksDB state directory")->default_val(flags.state_dir);
  auto* bootstrap_admin = app.add_option("--bootstrap-admin-config", flags.bootstrap_admin_config,
                                         "on a fresh state dir: create the cluster admin and write its client config "
                                         "(address + API token, mode 0600) to this path");
  auto* audit_max =
      app.add_option("--audit-max-records", flags.audit_max_records, "the audit log keeps the newest this many records")
          ->default_val(flags.audit_max_records);
  auto* interval =
      app.add_option("--heartbeat-interval-ms", flags.heartbeat_interval_ms, "heartbeat interval told to agents")
          ->default_val(flags.heartbeat_interval_ms);
  auto* timeout =
      app.add_option("--heartbeat-timeout-ms", flags.heartbeat_timeout_ms, "a node silent this long is down")
          ->default_val(flags.heartbeat_timeout_ms);
  auto* stop_timeout =
      app.add_option("--stop-timeout-ms", flags.stop_timeout_ms, "an unconfirmed StopTask counts as done after this")
          ->default_val(flags.stop_timeout_ms);
  auto* reconnect_grace =
      app.add_option("--reconnect-grace-ms", flags.reconnect_grace_ms,
                     "a DOWN node's running tasks are kept this long for it to reconnect (0: lost at once)")
          ->default_val(flags.reconnect_grace_ms);
  auto* log_timeout =
      app.add_option("--log-fetch-timeout-ms", flags.log_fetch_timeout_ms, "GetLogs waits this long for the agent")
          ->default_val(flags.log_fetch_timeout_ms);
  auto* level = app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error, critical, off")
                    ->default_val(flags.log_level);
  auto* http =
      app.add_option("--http-bind", flags.http_bind, "HOST:PORT for GET /metrics and GET /api/jobs (default: off)");
  auto* bootstrap = app.add_option("--bootstrap-join-token-file", flags.bootstrap_join_token_file,
                                   "fresh cluster only: the join token in this file (created 0600 if missing) "
                                   "admits the first agents");
  auto* plaintext = app.add_flag("--insecure-plaintext", flags.insecure_plaintext,
                                 "serve without CurveZMQ encryption and authentication (tests, trusted networks)");
  auto* max_message =
      app.add_option("--max-message-bytes", flags.max_message_bytes, "largest frame accepted (ZMQ_MAXMSGSIZE)")
          ->default_val(flags.max_message_bytes);
  auto* no_shared_fs = app.add_flag("--no-shared-filesystem", flags.shared_filesystem,
                                    "nodes share no filesystem: stage inputs to each node, replicate checkpoints "
                                    "(docs/transfers.md)");
  auto* artifact_source = app.add_option("--artifact-source", flags.artifact_source,
                                         "without a shared filesystem: the node holding jobs' inputs when a spec "
                                         "names no stage_from");
  auto* replicas = app.add_option("--checkpoint-replicas", flags.checkpoint_replicas,
                                  "verified copies of a checkpoint on other nodes before it counts")
                       ->default_val(flags.checkpoint_replicas);
  std::string backup_config, backup_state_dir, backup_out;
  auto* backup = app.add_subcommand("backup",
                                    "write a consistent copy of the state directory (RocksDB checkpoint + CurveZMQ "
                                    "keys) to a new directory, through the running coordinator if one serves it");
  backup->add_option("--state-dir", backup_state_dir, "the coordinator's state directory");
  backup->add_option("--config", backup_config, "coordinator config file (its state_dir)")->check(CLI::ExistingFile);
  backup->add_option("--out", backup_out, "new directory for the backup (absent or empty)")->required();
  CLI11_PARSE(app, argc, argv);
  if (backup->parsed()) return RunBackupCommand(backup_config, backup_state_dir, backup_out);

  CoordinatorConfig config;
  if (!config_file.empty()) {
    if (auto st = LoadConfigFile(config_file, &config); !st.ok()) {
      std::fprintf(stderr, "anneal-coordinator: %s\n", st.message().c_str());
      return 2;
    }
  }
  if (bind->count()) config.bind = flags.bind;
  if (state_dir->count()) config.state_dir = flags.state_dir;
  if (bootstrap_admin->count()) config.bootstrap_admin_config = flags.bootstrap_admin_config;
  if (audit_max->count()) config.audit_max_records = flags.audit_max_records;
  if (interval->count()) config.heartbeat_interval_ms = flags.heartbeat_interval_ms;
  if (timeout->count()) config.heartbeat_timeout_ms = flags.heartbeat_timeout_ms;
  if (stop_timeout->count()) config.stop_timeout_ms = flags.stop_timeout_ms;
  if (reconnect_grace->count()) config.reconnect_grace_ms = flags.reconnect_grace_ms;
  if (log_timeout->count()) config.log_fetch_timeout_ms = flags.log_fetch_timeout_ms;
  if (level->count()) config.log_level = flags.log_level;
  if (http->count()) config.http_bind = flags.http_bind;
  if (bootstrap->count()) config.bootstrap_join_token_file = flags.bootstrap_join_token_file;
  if (plaintext->count()) config.insecure_plaintext = flags.insecure_plaintext;
  if (max_message->count()) config.max_message_bytes = flags.max_message_bytes;
  if (no_shared_fs->count()) config.shared_filesystem = false;
  if (artifact_source->count()) config.artifact_source = flags.artifact_source;
  if (replicas->count()) config.checkpoint_replicas = flags.checkpoint_replicas;
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
  // ---- transport: the long-term CurveZMQ keypair in the state dir (protocol/curve.h), or loud plaintext
  std::optional<anneal::protocol::CurveKeyPair> curve;
  if (config.insecure_plaintext) {
    spdlog::warn(
        "INSECURE: --insecure-plaintext: agent and client traffic is neither encrypted nor authenticated; "
        "anyone who reaches {} can read it and impersonate the coordinator",
        config.bind);
  } else if (!anneal::protocol::CurveAvailable()) {
    spdlog::critical(
        "this libzmq has no CurveZMQ (zmq_has(\"curve\") is false): install a libzmq built with "
        "libsodium, or run with --insecure-plaintext");
    return 1;
  } else {
    auto keys = anneal::protocol::LoadOrCreateServerKeys(config.state_dir);
    if (!keys.ok()) {
      spdlog::critical("CurveZMQ keys: {}", keys.status().ToString());
      return 1;
    }
    curve = *keys;
    spdlog::info("CurveZMQ on; public key {} (in {}/{})", keys->public_key, config.state_dir,
                 anneal::protocol::kCurvePublicKeyFile);
  }
  SystemClock clock;
  CoordinatorOptions options;
  options.audit_max_records = config.audit_max_records;
  options.server_public_key = curve ? curve->public_key : "";
  options.limits = {.max_spec_bytes = static_cast<size_t>(config.max_spec_bytes),
                    .max_name_bytes = static_cast<size_t>(config.max_name_bytes),
                    .max_watchers_per_peer = static_cast<size_t>(config.max_watchers_per_peer),
                    .max_watchers_total = static_cast<size_t>(config.max_watchers_total),
                    .max_log_fetches_per_peer = static_cast<size_t>(config.max_log_fetches_per_peer)};
  options.heartbeat_interval_ms = config.heartbeat_interval_ms;
  options.heartbeat_timeout_ms = config.heartbeat_timeout_ms;
  options.reconnect_grace_ms = config.reconnect_grace_ms;
  options.stop_timeout_ms = config.stop_timeout_ms;
  options.log_fetch_timeout_ms = config.log_fetch_timeout_ms;
  ApplyIdentityConfig(config, &options);  // agent identity: join tokens, bounds
  options.planner.preemption = config.preemption;
  options.planner.min_runtime_ms = config.min_runtime_ms;
  options.planner.share_horizon_s = config.share_horizon_s;
  options.planner.backfill = config.backfill;
  options.preemption_grace_ms = config.preemption_grace_ms;
  options.usage_half_life_ms = config.usage_half_life_ms;
  options.schedule_interval_ms = config.schedule_interval_ms;
  options.schedules.misfire_grace_ms = config.schedule_misfire_grace_ms;
  options.path_policy = std::make_shared<const anneal::jobspec::PathPolicy>(*config.path_policy);
  // Transfer tickets (docs/transfers.md): the signing key lives beside the CurveZMQ keys in the state directory.
  auto signer = anneal::transfer::TicketSigner::LoadOrCreate(config.state_dir);
  if (!signer.ok()) {
    spdlog::critical("transfer ticket key: {}", signer.status().ToString());
    return 1;
  }
  options.artifacts = {.shared_filesystem = config.shared_filesystem,
                       .default_source = config.artifact_source,
                       .replicas = static_cast<int>(config.checkpoint_replicas),
                       .ticket_ttl_ms = config.transfer_ticket_ttl_ms,
                       .signer = std::make_shared<const anneal::transfer::TicketSigner>(std::move(*signer))};
  if (!config.shared_filesystem) {
    spdlog::info(
        "no shared filesystem: inputs staged from '{}' unless a spec names stage_from; {} checkpoint "
        "replica(s)",
        config.artifact_source, config.checkpoint_replicas);
  }
  Coordinator core(options, store->get(), &clock);
  if (auto st = core.Recover(); !st.ok()) {
    spdlog::critical("recovering state from {}: {}", config.state_dir, st.ToString());
    return 1;
  }
  if (auto st = BootstrapJoinTokenFile(core, config.bootstrap_join_token_file); !st.ok()) {
    spdlog::critical("{}", st.ToString());
    return 1;
  }
  Server server({.bind = config.bind, .max_message_bytes = config.max_message_bytes, .curve = curve}, &core, &clock);
  if (auto st = server.Bind(); !st.ok()) {
    spdlog::critical("{}", st.ToString());
    return 1;
  }
  if (auto st =
          BootstrapIfFresh(core, server.endpoint(), curve ? curve->public_key : "", config.bootstrap_admin_config);
      !st.ok()) {
    spdlog::critical("bootstrapping the cluster admin: {}", st.ToString());
    return 1;
  }
  BackupServer backup_server(store->get(), config.state_dir);  // online backups (coordinator/backup.h)
  if (auto st = backup_server.Start(); !st.ok()) spdlog::warn("online backups are off: {}", st.ToString());
  std::unique_ptr<HttpServer> http_server;
  if (!config.http_bind.empty()) {
    http_server = std::make_unique<HttpServer>();
    HttpServerOptions http_options;
    http_options.public_metrics = config.http_public_metrics;
    http_options.authenticate = ClusterAdminTokenAuthenticator(store->get(), &clock);
    http_options.max_connections = static_cast<size_t>(config.http_max_connections);
    http_options.max_request_bytes = static_cast<size_t>(config.http_max_request_bytes);
    http_options.max_submit_bytes = static_cast<size_t>(config.http_max_submit_bytes);
    http_options.max_streams = static_cast<size_t>(config.http_max_streams);
    http_options.max_streams_per_token = static_cast<size_t>(config.http_max_streams_per_token);
    // The REST API's gateway: a client of this very ROUTER (coordinator/rest_gateway.h).
    http_options.gateway_endpoint = ClientAddress(server.endpoint());
    http_options.gateway_server_key = curve ? curve->public_key : "";
    if (auto st = http_server->Start(config.http_bind, std::move(http_options)); !st.ok()) {
      spdlog::critical("{}", st.ToString());
      return 1;
    }
    server.SetRoundHook([&] { http_server->Publish(core); });
  }
  spdlog::info("anneal-coordinator {} ready (state {}, heartbeat timeout {} ms)", anneal::Version(), config.state_dir,
               config.heartbeat_timeout_ms);
  // Tests and scripts wait for this line on stdout to know the endpoint (port 0 binds are resolved); the
  // server key comes first, so whoever waits for "listening" has it.
  if (curve) std::printf("server-key %s\n", curve->public_key.c_str());
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
