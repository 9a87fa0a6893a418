#include "agent/config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "common/version.h"
#include "protocol/curve.h"

namespace anneal::agent {
namespace {

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

std::string NormalizeKey(std::string key) {
  for (char& c : key) {
    if (c == '-') c = '_';
  }
  return key;
}

// Parses "B-E" into a port range.
Status ParsePortRange(const std::string& text, uint32_t* begin, uint32_t* end) {
  const auto dash = text.find('-');
  try {
    if (dash == std::string::npos) throw std::invalid_argument("no dash");
    const unsigned long b = std::stoul(text.substr(0, dash));
    const unsigned long e = std::stoul(text.substr(dash + 1));
    if (b == 0 || e > 65535 || b > e) throw std::out_of_range("range");
    *begin = static_cast<uint32_t>(b);
    *end = static_cast<uint32_t>(e);
  } catch (const std::exception&) {
    return InvalidArgumentError("rendezvous port range '" + text +
                                "': expected BEGIN-END with 1 <= BEGIN <= END <= 65535");
  }
  return Status::Ok();
}

// run_as: a user for every team (a scalar), or {default: USER, teams: {TEAM: USER}}; USER = name or UID:GID.
Status ParseRunAs(const YAML::Node& v, const std::string& where, RunAsConfig* run_as) {
  if (v.IsScalar()) {
    run_as->default_user = v.as<std::string>();
    return Status::Ok();
  }
  if (!v.IsMap()) return InvalidArgumentError(where + ": expected a user, or {default: USER, teams: {TEAM: USER}}");
  for (const auto& kv : v) {
    const std::string k = kv.first.as<std::string>();
    if (k == "default") {
      run_as->default_user = kv.second.as<std::string>();
    } else if (k == "teams" && kv.second.IsMap()) {
      for (const auto& t : kv.second) run_as->teams[t.first.as<std::string>()] = t.second.as<std::string>();
    } else {
      return InvalidArgumentError(where + "." + k + ": unknown key (known: default, teams: {TEAM: USER})");
    }
  }
  return Status::Ok();
}

}  // namespace

Status ParseLabel(const std::string& text, std::map<std::string, std::string>* labels) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return InvalidArgumentError("label '" + text + "': expected key=value with a non-empty key");
  }
  (*labels)[text.substr(0, eq)] = text.substr(eq + 1);
  return Status::Ok();
}

Status ApplyConfigFile(const std::string& path, const std::map<std::string, bool>& explicit_flags,
                       AgentConfig* config) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return NotFoundError("agent config file " + path + ": cannot be read");
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError("agent config file " + path + ": " + e.what());
  }
  if (root.IsNull()) return Status::Ok();
  if (!root.IsMap()) return InvalidArgumentError("agent config file " + path + ": expected a map of settings");
  for (const auto& kv : root) {
    const std::string key = NormalizeKey(kv.first.as<std::string>());
    if (key == "run_as" && explicit_flags.count(key) != 0) {
      // --run-as sets the default user only: the file's team mapping still applies.
      RunAsConfig from_file;
      RETURN_IF_ERROR(ParseRunAs(kv.second, "agent config file " + path + ": key 'run_as'", &from_file));
      config->run_as.teams = from_file.teams;
      continue;
    }
    if (explicit_flags.count(key) != 0) continue;  // the command line wins
    const YAML::Node& v = kv.second;
    const std::string where = "agent config file " + path + ": key '" + key + "'";
    try {
      if (key == "coordinator")
        config->coordinator = v.as<std::string>();
      else if (key == "node")
        config->node = v.as<std::string>();
      else if (key == "work_dir")
        config->work_dir = v.as<std::string>();
      else if (key == "slots")
        config->slots = v.as<uint32_t>();
      else if (key == "address")
        config->address = v.as<std::string>();
      else if (key == "trainer")
        config->trainer = v.as<std::string>();
      else if (key == "heartbeat_ms")
        config->heartbeat_ms = v.as<uint32_t>();
      else if (key == "log_level")
        config->log_level = v.as<std::string>();
      else if (key == "keep_tasks_on_exit")
        config->keep_tasks_on_exit = v.as<bool>();
      else if (key == "ranks_survive_agent")
        config->ranks_survive_agent = v.as<bool>();
      else if (key == "log_max_bytes")
        config->log_max_bytes = v.as<uint64_t>();
      else if (key == "shutdown_grace_ms")
        config->shutdown_grace_ms = v.as<uint32_t>();
      else if (key == "min_free_bytes")
        config->min_free_bytes = v.as<uint64_t>();
      else if (key == "log_retention_hours")
        config->log_retention_hours = v.as<uint32_t>();
      else if (key == "output_lock_wait_ms")
        config->output_lock_wait_ms = v.as<uint64_t>();
      // ---- transport and limits
      else if (key == "server_key")
        config->server_key = v.as<std::string>();
      else if (key == "server_key_file")
        config->server_key_file = v.as<std::string>();
      else if (key == "insecure_plaintext")
        config->insecure_plaintext = v.as<bool>();
      else if (key == "max_message_bytes")
        config->max_message_bytes = v.as<int64_t>();
      else if (key == "spool_max_bytes")
        config->spool_max_bytes = v.as<uint64_t>();
      // ---- transfers (agent/stager.h, docs/transfers.md)
      else if (key == "transfer_port")
        config->transfer_port = v.as<uint16_t>();
      else if (key == "artifact_cache_max_bytes")
        config->artifact_cache_max_bytes = v.as<uint64_t>();
      else if (key == "transfer_timeout_ms")
        config->transfer_timeout_ms = v.as<int64_t>();
      // ---- node identity
      else if (key == "join_token_file")
        config->join_token_file = v.as<std::string>();
      // ---- metrics endpoint (agent/metrics_service.h)
      else if (key == "metrics_bind")
        config->metrics_bind = v.as<std::string>();
      else if (key == "metrics_token_file")
        config->metrics_token_file = v.as<std::string>();
      else if (key == "rendezvous_ports") {
        RETURN_IF_ERROR(
            ParsePortRange(v.as<std::string>(), &config->rendezvous_port_begin, &config->rendezvous_port_end)
                .WithContext(where));
      } else if (key == "labels") {
        if (v.IsMap()) {
          for (const auto& l : v) config->labels[l.first.as<std::string>()] = l.second.as<std::string>();
        } else if (v.IsSequence()) {
          for (const auto& l : v) RETURN_IF_ERROR(ParseLabel(l.as<std::string>(), &config->labels).WithContext(where));
        } else {
          return InvalidArgumentError(where + ": expected a map {key: value} or a list of key=value");
        }
      } else if (key == "run_as") {
        RETURN_IF_ERROR(ParseRunAs(v, where, &config->run_as));
      } else if (key == "rank_env_allow") {
        if (!v.IsSequence()) return InvalidArgumentError(where + ": expected a list of variable names or PREFIX_*");
        for (const auto& n : v) config->rank_env_allow.push_back(n.as<std::string>());
      } else {
        return InvalidArgumentError(where +
                                    ": unknown setting (allowed: coordinator, node, work_dir, slots, "
                                    "labels, address, trainer, heartbeat_ms, log_level, keep_tasks_on_exit, "
                                    "rendezvous_ports, log_max_bytes, shutdown_grace_ms, min_free_bytes, "
                                    "log_retention_hours, join_token_file, server_key, server_key_file, "
                                    "insecure_plaintext, max_message_bytes, spool_max_bytes, run_as, rank_env_allow, "
                                    "ranks_survive_agent, metrics_bind, metrics_token_file, transfer_port, "
                                    "artifact_cache_max_bytes, transfer_timeout_ms, output_lock_wait_ms)");
      }
    } catch (const YAML::Exception& e) {
      return InvalidArgumentError(where + ": wrong type (" + e.what() + ")");
    }
  }
  return Status::Ok();
}

Status ResolveServerKey(AgentConfig* c) {
  if (c->max_message_bytes <= 0) return InvalidArgumentError("--max-message-bytes must be positive");
  if (c->transfer_timeout_ms < 100 || c->transfer_timeout_ms > 3600000) {
    return InvalidArgumentError("transfer_timeout_ms (--transfer-timeout-ms) must be 100..3600000 ms, got " +
                                std::to_string(c->transfer_timeout_ms));
  }
  if (c->server_key.empty() && !c->server_key_file.empty()) {
    auto key = protocol::ReadCurveKeyFile(c->server_key_file);
    if (!key.ok()) return key.status().WithContext("anneal-agent: --server-key-file");
    c->server_key = *key;
  } else if (!c->server_key.empty()) {
    RETURN_IF_ERROR(protocol::CheckCurveKeyText(c->server_key, "anneal-agent: --server-key"));
  }
  if (c->server_key.empty() && !c->insecure_plaintext) {
    return InvalidArgumentError(
        "anneal-agent: no coordinator server key: pass --server-key KEY or --server-key-file FILE (the "
        "coordinator's <state dir>/curve.pub), or --insecure-plaintext for a coordinator run without CurveZMQ");
  }
  return Status::Ok();
}

StatusOr<ParsedFlags> ParseAgentFlags(int argc, const char* const* argv) {
  ParsedFlags parsed;
  AgentConfig& c = parsed.config;
  CLI::App app{"anneal-agent: runs the trainer ranks of Anneal jobs on this node", "anneal-agent"};
  app.set_version_flag("--version", std::string("anneal-agent ") + anneal::Version());
  std::string config_file;
  std::vector<std::string> labels;
  std::string ports;
  app.add_option("--coordinator", c.coordinator, "coordinator endpoint")->capture_default_str();
  app.add_option("--node", c.node, "node name, unique in the cluster (default: hostname)");
  app.add_option("--work-dir", c.work_dir, "task directories, logs, spool")->capture_default_str();
  app.add_option("--slots", c.slots, "rank slots on a CPU node (default: one per GPU)");
  app.add_option("--label", labels, "node label key=value (repeatable)");
  app.add_option("--address", c.address, "address other nodes reach this one at (default: hostname)");
  app.add_option("--trainer", c.trainer, "trainer program (default: anneal-train next to anneal-agent)");
  app.add_option("--heartbeat-ms", c.heartbeat_ms, "heartbeat interval")->capture_default_str();
  app.add_option("--config", config_file, "YAML config file (flags override it)");
  app.add_option("--log-level", c.log_level, "trace|debug|info|warn|error|critical|off")->capture_default_str();
  app.add_flag("--keep-tasks-on-exit", c.keep_tasks_on_exit,
               "leave running ranks alone on shutdown (re-adopted by the next agent)");
  app.add_flag("--ranks-survive-agent", c.ranks_survive_agent,
               "ranks outlive an agent crash (no death signal) and are re-adopted by the restarted agent");
  app.add_option("--rendezvous-ports", ports, "rank-0 rendezvous port range BEGIN-END (default 29500-29999)");
  app.add_option("--log-max-bytes", c.log_max_bytes, "rotate a rank log past this size")->capture_default_str();
  app.add_option("--shutdown-grace-ms", c.shutdown_grace_ms, "SIGTERM->SIGKILL grace when stopping on exit")
      ->capture_default_str();
  app.add_option("--min-free-bytes", c.min_free_bytes, "free space required in output and work dirs")
      ->capture_default_str();
  app.add_option("--run-as", c.run_as.default_user,
                 "user (name or UID:GID) ranks run as when the agent runs as root (default nobody; per team: the "
                 "config file's run_as)");
  app.add_option("--log-retention-hours", c.log_retention_hours,
                 "delete rank logs of tasks that ended longer ago (0: keep them)")
      ->capture_default_str();
  app.add_option("--output-lock-wait-ms", c.output_lock_wait_ms,
                 "how long a launch waits for an older epoch of its job to release the output lock (0: no wait)")
      ->check(CLI::NonNegativeNumber)  // CLI11 would take -5 for an unsigned as 2^64 - 5
      ->capture_default_str();
  app.add_option("--join-token-file", c.join_token_file,
                 "file holding the join token of a new node (from `anneal node join-token create`)");
  app.add_option("--metrics-bind", c.metrics_bind,
                 "HOST:PORT for GET /metrics (Prometheus; default: off; port 0 picks one, written to "
                 "<work dir>/metrics-address)");
  app.add_option("--metrics-token-file", c.metrics_token_file,
                 "file holding the bearer token every metrics request must carry (required with --metrics-bind)");
  app.add_option("--server-key", c.server_key, "the coordinator's CurveZMQ public key (Z85)");
  app.add_option("--server-key-file", c.server_key_file, "file holding the coordinator's public key (its curve.pub)");
  app.add_flag("--insecure-plaintext", c.insecure_plaintext,
               "talk to a coordinator run with --insecure-plaintext (no encryption, no server authentication)");
  app.add_option("--max-message-bytes", c.max_message_bytes, "largest frame accepted from the coordinator")
      ->capture_default_str();
  app.add_option("--transfer-port", c.transfer_port,
                 "port of the file server other nodes and `anneal fetch` copy from, on --address (0: pick one)")
      ->capture_default_str();
  app.add_option("--artifact-cache-max-bytes", c.artifact_cache_max_bytes,
                 "staged models and datasets kept in <work dir>/artifacts up to this size (0: no limit)")
      ->capture_default_str();
  app.add_option("--transfer-timeout-ms", c.transfer_timeout_ms,
                 "a staging or checkpoint copy's read with no reply this long is sent again on a fresh socket, from "
                 "the last byte written (5 times in a row, then the copy fails)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  app.add_flag("--verify-artifacts", parsed.verify_artifacts,
               "hash every staged file in <work dir>/artifacts again (bit rot, changes that kept size and mtime), "
               "remove the damaged ones (fetched again when next needed), report and exit: 0 when none was damaged, "
               "1 when some were, 2 on an error (refused while a staging holds the store)");
  app.add_option("--spool-max-bytes", c.spool_max_bytes, "spool size past which metric batches are dropped")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    parsed.exit_now = true;
    parsed.output = app.help();
    return parsed;
  } catch (const CLI::CallForVersion&) {
    parsed.exit_now = true;
    parsed.output = std::string("anneal-agent ") + anneal::Version() + "\n";
    return parsed;
  } catch (const CLI::ParseError& e) {
    return InvalidArgumentError(std::string("anneal-agent: ") + e.what() + " (see --help)");
  }
  std::map<std::string, bool> explicit_flags;
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->count() > 0)
      explicit_flags[NormalizeKey(opt->get_name().substr(opt->get_name().find_first_not_of('-')))] = true;
  }
  if (!config_file.empty()) RETURN_IF_ERROR(ApplyConfigFile(config_file, explicit_flags, &c));
  for (const auto& l : labels) RETURN_IF_ERROR(ParseLabel(l, &c.labels).WithContext("--label"));
  if (!ports.empty()) RETURN_IF_ERROR(ParsePortRange(ports, &c.rendezvous_port_begin, &c.rendezvous_port_end));
  // ANNEAL_RANK_ENV_ALLOW=A,B_* adds to rank_env_allow (for agents started by `anneal up`, which passes no config).
  if (const char* extra = std::getenv("ANNEAL_RANK_ENV_ALLOW"); extra != nullptr) {
    std::string list = extra;
    for (size_t start = 0; start <= list.size();) {
      const size_t comma = std::min(list.find(',', start), list.size());
      if (comma > start) c.rank_env_allow.push_back(list.substr(start, comma - start));
      start = comma + 1;
    }
  }
  if (c.node.empty()) c.node = Hostname();
  if (c.address.empty()) c.address = Hostname();
  if (c.heartbeat_ms == 0) return InvalidArgumentError("--heartbeat-ms must be positive");
  if (!parsed.verify_artifacts) RETURN_IF_ERROR(ResolveServerKey(&c));  // a local check talks to no coordinator
  if (c.trainer.empty()) {
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) self = std::filesystem::absolute(argv[0], ec);
    c.trainer = (self.parent_path() / "anneal-train").string();
  }
  std::error_code ec;
  c.work_dir = std::filesystem::absolute(c.work_dir, ec).lexically_normal().string();
  return parsed;
}

}  // namespace anneal::agent
