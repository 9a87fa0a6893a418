// anneal: the command-line client of an Anneal cluster (docs/user-guide.md).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>

#include "cli/commands.h"
#include "cli/settings.h"
#include "common/version.h"

namespace anneal::cli {

int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kInvalidArgument:
      return kExitUsage;
    case StatusCode::kUnavailable:
    case StatusCode::kDeadlineExceeded:
      return kExitUnreachable;
    case StatusCode::kNotFound:
    case StatusCode::kUnauthenticated:
    case StatusCode::kPermissionDenied:
      return kExitNotFound;
    default:
      return kExitFailed;
  }
}

int ReportError(std::string_view command, const Status& status) {
  std::string message = status.message();
  if (status.code() == StatusCode::kUnauthenticated || status.code() == StatusCode::kPermissionDenied ||
      status.code() == StatusCode::kVersionMismatch) {
    message = std::string(StatusCodeName(status.code())) + ": " + message;
  }
  std::cerr << "anneal " << command << ": " << message << "\n";
  return ExitCodeFor(status);
}

StatusOr<int64_t> ParseDurationMs(std::string_view text) {
  static constexpr std::pair<char, int64_t> kUnits[] = {
      {'s', 1000}, {'m', 60'000}, {'h', 3'600'000}, {'d', 86'400'000}};
  std::string_view digits = text;
  int64_t unit = 1000;
  for (const auto& [suffix, ms] : kUnits) {
    if (!text.empty() && text.back() == suffix) digits = text.substr(0, text.size() - 1), unit = ms;
  }
  int64_t value = 0;
  const bool ok = !digits.empty() && digits.size() <= 9 &&
                  std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (ok) value = std::stoll(std::string(digits));
  if (!ok) {
    return InvalidArgumentError(fmt::format("'{}' is not a duration: use 90m, 24h, 30d, 45s or seconds", text));
  }
  return value * unit;
}

StatusOr<std::unique_ptr<CoordinatorClient>> MakeClient(const GlobalOptions& g) {
  ASSIGN_OR_RETURN(Settings s, ResolveSettings(g.coordinator, g.token, {g.server_key, g.insecure_plaintext}));
  if (g.timeout_s <= 0) return InvalidArgumentError(fmt::format("--timeout must be positive, got {}", g.timeout_s));
  return std::make_unique<CoordinatorClient>(s.coordinator, s.token,
                                             std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000)),
                                             ClientTransport{.server_key = s.server_key,
                                                             .server_key_from = s.server_key_from,
                                                             .insecure_plaintext = s.insecure_plaintext});
}

}  // namespace anneal::cli

int main(int argc, char** argv) {
  using namespace anneal::cli;
  CLI::App app("anneal: submit and watch fine-tuning jobs on an Anneal cluster", "anneal");
  app.set_version_flag("--version", std::string("anneal ") + anneal::Version());
  app.require_subcommand(1);
  app.fallthrough();
  GlobalOptions g;
  app.add_option("--coordinator", g.coordinator,
                 "coordinator address tcp://HOST:PORT (else ANNEAL_COORDINATOR, ~/.anneal/config)");
  app.add_option("--token", g.token, "access token (else ANNEAL_TOKEN, ~/.anneal/config)");
  app.add_option("--server-key", g.server_key,
                 "the coordinator's CurveZMQ public key (else ANNEAL_SERVER_KEY, server_key in ~/.anneal/config)");
  app.add_flag("--insecure-plaintext", g.insecure_plaintext,
               "talk to a coordinator run with --insecure-plaintext (no encryption, no server authentication)");
  app.add_flag("--json", g.json, "machine-readable output");
  app.add_option("--timeout", g.timeout_s, "seconds to wait for the coordinator")->capture_default_str();
  Action action;
  AddJobCommands(app, g, &action);
  AddFetchCommand(app, g, &action);
  AddWatchCommand(app, g, &action);
  AddNodeCommands(app, g, &action);
  AddClusterCommands(app, g, &action);
  AddNodeIdentityCommands(app, g, &action);
  AddModelCommands(app, g, &action);
  AddIdentityCommands(app, g, &action);
  AddQueueCommand(app, g, &action);
  AddModelRegistryCommands(app, g, &action);
  AddPipelineCommands(app, g, &action);
  AddScheduleCommands(app, g, &action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // "anneal bogus": CLI11 says a subcommand is required; name the word it did not know instead.
    const auto left = app.remaining();
    if (app.get_subcommands().empty() && !left.empty() && left.front().rfind("-", 0) != 0) {
      std::cerr << "anneal: unknown command '" << left.front() << "' (see anneal --help)\n";
      return kExitUsage;
    }
    std::cerr << "anneal: " << e.what() << " (see anneal --help)\n";
    return kExitUsage;
  }
  if (!action) {
    std::cerr << "anneal: no command given (see anneal --help)\n";
    return kExitUsage;
  }
  return action();
}
