// anneal node join-token create|list|revoke, anneal node remove: node identity (docs/operations.md "Joining a
// node"). Admin operations: the coordinator checks the caller's token.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "cli/output.h"

namespace anneal::cli {
namespace {

// "90s", "30m", "24h", "7d", or plain milliseconds; 0 when empty (the coordinator's default).
StatusOr<int64_t> ParseTtl(const std::string& text) {
  if (text.empty()) return int64_t{0};
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  const int64_t scale = unit == "s"    ? 1000
                        : unit == "m"  ? 60'000
                        : unit == "h"  ? 3'600'000
                        : unit == "d"  ? 86'400'000
                        : unit == "ms" ? 1
                                       : 0;
  if (used == 0 || value <= 0 || scale == 0 || value > INT64_MAX / scale) {
    return InvalidArgumentError(fmt::format("--ttl '{}': expected a positive duration like 90s, 30m, 24h or 7d", text));
  }
  return value * scale;
}

std::string When(int64_t ms) {
  return ms == 0 ? "never" : Timestamp(ms);
}

int CreateToken(const GlobalOptions& g, const std::string& ttl_text, const std::string& description) {
  auto ttl = ParseTtl(ttl_text);
  if (!ttl.ok()) return ReportError("node join-token create", ttl.status());
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("node join-token create", client.status());
  pb::ClientRequest req;
  req.mutable_create_join_token()->set_ttl_ms(*ttl);
  req.mutable_create_join_token()->set_description(description);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("node join-token create", reply.status());
  const auto& created = reply->create_join_token();
  std::vector<std::string> addresses = {(*client)->address()};
  for (const auto& a : created.coordinator_addresses()) {
    if (a != addresses[0]) addresses.push_back(a);
  }
  if (g.json) {
    std::cout << nlohmann::json{{"token", created.token()},
                                {"id", created.record().id()},
                                {"expires_at_ms", created.record().expires_at_ms()},
                                {"coordinator_addresses", addresses},
                                {"server_public_key", created.server_public_key()}}
                     .dump(2)
              << "\n";
    return kExitOk;
  }
  std::cout << created.token() << "\n";
  std::cerr << fmt::format(
      "join token {} (expires {}). It is shown only now: store it in a file readable only by the agent\n"
      "(chmod 600) and start the new node with:\n"
      "  anneal-agent --coordinator {} --node NAME --join-token-file FILE\n",
      created.record().id(), When(created.record().expires_at_ms()), addresses[0]);
  if (!created.server_public_key().empty()) std::cerr << "server public key: " << created.server_public_key() << "\n";
  return kExitOk;
}

int ListTokens(const GlobalOptions& g) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("node join-token list", client.status());
  pb::ClientRequest req;
  req.mutable_list_join_tokens();
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("node join-token list", reply.status());
  const int64_t now = NowMs();
  auto state = [now](const pb::JoinTokenRecord& t) {
    if (t.revoked()) return "revoked";
    if (t.expires_at_ms() != 0 && now >= t.expires_at_ms()) return "expired";
    return "valid";
  };
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : reply->list_join_tokens().tokens()) {
      out.push_back({{"id", t.id()},
                     {"state", state(t)},
                     {"created_at_ms", t.created_at_ms()},
                     {"expires_at_ms", t.expires_at_ms()},
                     {"nodes_joined", t.nodes_joined()},
                     {"description", t.description()}});
    }
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  Table t({"ID", "STATE", "CREATED", "EXPIRES", "JOINED", "DESCRIPTION"});
  for (const auto& tok : reply->list_join_tokens().tokens()) {
    t.Add({tok.id(), state(tok), Timestamp(tok.created_at_ms()), When(tok.expires_at_ms()),
           std::to_string(tok.nodes_joined()), tok.description().empty() ? "-" : tok.description()});
  }
  t.Print(std::cout);
  return kExitOk;
}

int RevokeToken(const GlobalOptions& g, const std::string& id) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("node join-token revoke", client.status());
  pb::ClientRequest req;
  req.mutable_revoke_join_token()->set_id(id);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("node join-token revoke", reply.status());
  std::cout << "join token " << id << " revoked (nodes that joined with it keep their identity)\n";
  return kExitOk;
}

int RemoveNode(const GlobalOptions& g, const std::string& node, bool force) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("node remove", client.status());
  pb::ClientRequest req;
  req.mutable_remove_node()->set_node_id(node);
  req.mutable_remove_node()->set_force(force);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("node remove", reply.status());
  std::cout << fmt::format("node {} removed{}; it must join again with a join token\n", node,
                           reply->remove_node().tasks_lost() > 0
                               ? fmt::format(" ({} task(s) marked lost)", reply->remove_node().tasks_lost())
                               : "");
  return kExitOk;
}

}  // namespace

void AddNodeIdentityCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto* node = app.add_subcommand("node", "Node identity: join tokens, removing a node");
  node->require_subcommand(1);
  auto* tokens = node->add_subcommand("join-token", "Join tokens that admit new nodes (admin)");
  tokens->require_subcommand(1);
  auto ttl = std::make_shared<std::string>();
  auto description = std::make_shared<std::string>();
  auto* create = tokens->add_subcommand("create", "Create a join token (printed once, on stdout)");
  create->add_option("--ttl", *ttl, "lifetime: 90s, 30m, 24h, 7d (default: the coordinator's, 24h)");
  create->add_option("--description", *description, "a note shown by list");
  create->callback([&g, ttl, description, action] {
    *action = [&g, ttl, description] { return CreateToken(g, *ttl, *description); };
  });
  tokens->add_subcommand("list", "List join tokens (never their secrets)")->callback([&g, action] {
    *action = [&g] { return ListTokens(g); };
  });
  auto id = std::make_shared<std::string>();
  auto* revoke = tokens->add_subcommand("revoke", "Revoke a join token: no new node joins with it");
  revoke->add_option("id", *id, "the token id (the part after anj_)")->required();
  revoke->callback([&g, id, action] { *action = [&g, id] { return RevokeToken(g, *id); }; });
  auto name = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  auto* remove = node->add_subcommand("remove", "Forget a node; it must join again with a join token (admin)");
  remove->add_option("node", *name, "node name")->required();
  remove->add_flag("--force", *force, "also when it runs tasks: they are marked lost");
  remove->callback([&g, name, force, action] { *action = [&g, name, force] { return RemoveNode(g, *name, *force); }; });
}

}  // namespace anneal::cli
