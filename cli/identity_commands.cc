// anneal whoami | token create/ls/revoke | user create/ls/delete | team create/ls/delete/add-member/
// remove-member | audit: the cluster's users, teams, roles, API tokens and audit log (docs/user-guide.md,
// "Teams, users and tokens"). Who may run which: coordinator/authz.h.
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/output.h"

namespace anneal::cli {

namespace {

// One request, its reply or the reported error (the exit code in `exit`).
std::optional<pb::ClientReply> CallOrReport(const GlobalOptions& g, std::string_view command, pb::ClientRequest request,
                                            int* exit) {
  auto client = MakeClient(g);
  if (!client.ok()) {
    *exit = ReportError(command, client.status());
    return std::nullopt;
  }
  auto reply = (*client)->Call(std::move(request));
  if (!reply.ok()) {
    *exit = ReportError(command, reply.status());
    return std::nullopt;
  }
  *exit = kExitOk;
  return std::move(*reply);
}

// Mutations that answer IdentityDone: prints its message (or {"ok": true, "message": ...}).
int RunDone(const GlobalOptions& g, std::string_view command, pb::ClientRequest request) {
  int exit = kExitOk;
  auto reply = CallOrReport(g, command, std::move(request), &exit);
  if (!reply) return exit;
  if (g.json) {
    std::cout << nlohmann::json{{"ok", true}, {"message", reply->identity_done().message()}}.dump() << "\n";
  } else {
    std::cout << reply->identity_done().message() << "\n";
  }
  return kExitOk;
}

std::string RolesText(const pb::UserRecord& user) {
  std::vector<std::string> parts;
  for (const auto& [team, role] : user.teams()) {
    parts.push_back(fmt::format("{}:{}", team, pb::Role_Name(static_cast<pb::Role>(role)).substr(5)));
  }
  std::sort(parts.begin(), parts.end());
  return parts.empty() ? "-" : fmt::format("{}", fmt::join(parts, ","));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int WhoAmI(const GlobalOptions& g) {
  int exit = kExitOk;
  pb::ClientRequest req;
  req.mutable_whoami();
  auto reply = CallOrReport(g, "whoami", req, &exit);
  if (!reply) return exit;
  const auto& user = reply->whoami().user();
  if (g.json) {
    std::cout << ToJson(reply->whoami()).dump(2) << "\n";
  } else {
    std::cout << user.name() << (user.cluster_admin() ? " (cluster admin)" : "")
              << "\nteams: " << Lower(RolesText(user)) << "\ntoken: " << reply->whoami().token_id() << "\n";
  }
  return kExitOk;
}

struct TokenCreateOptions {
  std::string user, ttl = "0", description;
};

int TokenCreate(const GlobalOptions& g, const TokenCreateOptions& o) {
  auto ttl = ParseDurationMs(o.ttl);
  if (!ttl.ok()) return ReportError("token create", ttl.status().WithContext("--ttl"));
  pb::ClientRequest req;
  req.mutable_create_token()->set_user(o.user);
  req.mutable_create_token()->set_ttl_ms(*ttl);
  req.mutable_create_token()->set_description(o.description);
  int exit = kExitOk;
  auto reply = CallOrReport(g, "token create", req, &exit);
  if (!reply) return exit;
  const auto& created = reply->create_token();
  if (g.json) {
    nlohmann::json j = ToJson(created.record());
    j["token"] = created.token();
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  std::cout << created.token() << "\n";
  std::cerr << fmt::format("token {} for user '{}'{}: shown once, store it now (e.g. ANNEAL_TOKEN)\n",
                           created.record().token_id(), created.record().user(),
                           created.record().expires_at_ms() == 0
                               ? ", never expires"
                               : ", expires " + Timestamp(created.record().expires_at_ms()));
  return kExitOk;
}

int TokenList(const GlobalOptions& g, const std::string& user, bool all) {
  pb::ClientRequest req;
  req.mutable_list_tokens()->set_user(user);
  req.mutable_list_tokens()->set_all_users(all);
  int exit = kExitOk;
  auto reply = CallOrReport(g, "token ls", req, &exit);
  if (!reply) return exit;
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : reply->list_tokens().tokens()) out.push_back(ToJson(t));
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  const int64_t now = NowMs();
  Table t({"TOKEN", "USER", "CREATED", "EXPIRES", "STATE", "DESCRIPTION"});
  for (const auto& tok : reply->list_tokens().tokens()) {
    const bool expired = tok.expires_at_ms() != 0 && now >= tok.expires_at_ms();
    t.Add({tok.token_id(), tok.user(), Timestamp(tok.created_at_ms()),
           tok.expires_at_ms() == 0 ? "never" : Timestamp(tok.expires_at_ms()),
           tok.revoked() ? "revoked"
           : expired     ? "expired"
                         : "active",
           tok.description().empty() ? "-" : tok.description()});
  }
  t.Print(std::cout);
  return kExitOk;
}

int UserList(const GlobalOptions& g) {
  pb::ClientRequest req;
  req.mutable_list_users();
  int exit = kExitOk;
  auto reply = CallOrReport(g, "user ls", req, &exit);
  if (!reply) return exit;
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& u : reply->list_users().users()) out.push_back(ToJson(u));
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  Table t({"USER", "CLUSTER ADMIN", "TEAMS", "CREATED", "BY"});
  for (const auto& u : reply->list_users().users()) {
    t.Add({u.name(), u.cluster_admin() ? "yes" : "no", Lower(RolesText(u)), Timestamp(u.created_at_ms()),
           u.created_by()});
  }
  t.Print(std::cout);
  return kExitOk;
}

int TeamList(const GlobalOptions& g) {
  pb::ClientRequest req;
  req.mutable_list_teams();
  int exit = kExitOk;
  auto reply = CallOrReport(g, "team ls", req, &exit);
  if (!reply) return exit;
  if (g.json) {
    std::cout << ToJson(reply->list_teams()).dump(2) << "\n";
    return kExitOk;
  }
  Table t({"TEAM", "WEIGHT", "QUOTAS (GUARANTEED/MAX)", "MEMBERS", "DESCRIPTION"});
  for (const auto& team : reply->list_teams().teams()) {
    std::vector<std::string> members;
    for (const auto& u : reply->list_teams().members()) {
      auto it = u.teams().find(team.name());
      if (it != u.teams().end()) {
        members.push_back(
            fmt::format("{}:{}", u.name(), Lower(pb::Role_Name(static_cast<pb::Role>(it->second)).substr(5))));
      }
    }
    t.Add({team.name(), WeightText(team), QuotaText(team),
           members.empty() ? "-" : fmt::format("{}", fmt::join(members, ",")),
           team.description().empty() ? "-" : team.description()});
  }
  t.Print(std::cout);
  return kExitOk;
}

struct QuotaOptions {
  std::string team;
  double weight = 0;        // 0: unchanged
  int64_t guaranteed = -1;  // -1: not given (then max is not given either)
  int64_t max = -1;
  std::string label;
};

// Prints the team's sharing settings as the coordinator stored them.
int TeamQuota(const GlobalOptions& g, const QuotaOptions& o) {
  if (o.weight == 0 && o.guaranteed < 0) {
    return ReportError("team quota",
                       InvalidArgumentError("nothing to change: give --weight, or --guaranteed and --max"));
  }
  pb::ClientRequest req;
  auto* r = req.mutable_set_team_quota();
  r->set_team(o.team);
  r->set_weight(o.weight);
  if (o.guaranteed >= 0) {
    auto* q = r->add_quotas();
    q->set_label(o.label);
    q->set_guaranteed(static_cast<uint32_t>(o.guaranteed));
    q->set_max(static_cast<uint32_t>(o.max));
  }
  int exit = kExitOk;
  auto reply = CallOrReport(g, "team quota", req, &exit);
  if (!reply) return exit;
  if (g.json) {
    std::cout << ToJson(reply->set_team_quota()).dump(2) << "\n";
    return kExitOk;
  }
  for (const auto& team : reply->set_team_quota().teams()) {
    std::cout << fmt::format("team '{}': weight {}, quotas (guaranteed/max): {}\n", team.name(), WeightText(team),
                             QuotaText(team));
  }
  return kExitOk;
}

struct AuditOptions {
  std::string user, team;
  uint32_t limit = 50;
  uint64_t before = 0;
};

int Audit(const GlobalOptions& g, const AuditOptions& o) {
  pb::ClientRequest req;
  auto* r = req.mutable_list_audit();
  r->set_user(o.user);
  r->set_team(o.team);
  r->set_limit(o.limit);
  r->set_before_seq(o.before);
  int exit = kExitOk;
  auto reply = CallOrReport(g, "audit", req, &exit);
  if (!reply) return exit;
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& rec : reply->list_audit().records()) out.push_back(ToJson(rec));
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  Table t({"SEQ", "TIME", "USER", "TEAM", "OPERATION", "TARGET", "RESULT", "MESSAGE"});
  for (const auto& rec : reply->list_audit().records()) {
    t.Add({std::to_string(rec.seq()), Timestamp(rec.time_ms()), rec.user().empty() ? "(unauthenticated)" : rec.user(),
           rec.team().empty() ? "-" : rec.team(), rec.operation(), rec.target().empty() ? "-" : rec.target(),
           rec.result() == pb::OK ? "ok" : Lower(pb::ErrorCode_Name(rec.result())),
           rec.message().empty() ? "-" : rec.message()});
  }
  t.Print(std::cout);
  return kExitOk;
}

void AddTokenCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto* token = app.add_subcommand("token", "Your API tokens (a cluster admin: anyone's)");
  token->require_subcommand(1);
  {
    auto o = std::make_shared<TokenCreateOptions>();
    auto* cmd = token->add_subcommand("create", "Create an API token; prints it once (stdout)");
    cmd->add_option("--user", o->user, "for this user (cluster admin only; default: yourself)");
    cmd->add_option("--ttl", o->ttl, "lifetime: 90m, 24h, 30d, or seconds (0: never expires)")->capture_default_str();
    cmd->add_option("--description", o->description, "what the token is for");
    cmd->callback([&g, o, action] { *action = [&g, o] { return TokenCreate(g, *o); }; });
  }
  {
    auto user = std::make_shared<std::string>();
    auto all = std::make_shared<bool>(false);
    auto* cmd = token->add_subcommand("ls", "List tokens (ids, never secrets)");
    cmd->add_option("--user", *user, "this user's (cluster admin only)");
    cmd->add_flag("--all", *all, "every user's (cluster admin only)");
    cmd->callback([&g, user, all, action] { *action = [&g, user, all] { return TokenList(g, *user, *all); }; });
  }
  {
    auto id = std::make_shared<std::string>();
    auto* cmd = token->add_subcommand("revoke", "Revoke a token at once");
    cmd->add_option("token_id", *id, "the token's id (anneal token ls)")->required();
    cmd->callback([&g, id, action] {
      *action = [&g, id] {
        pb::ClientRequest req;
        req.mutable_revoke_token()->set_token_id(*id);
        return RunDone(g, "token revoke", req);
      };
    });
  }
}

void AddUserCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto* user = app.add_subcommand("user", "The cluster's users (cluster admin)");
  user->require_subcommand(1);
  {
    auto name = std::make_shared<std::string>();
    auto admin = std::make_shared<bool>(false);
    auto* cmd = user->add_subcommand("create", "Create a user (then: anneal team add-member, anneal token create)");
    cmd->add_option("name", *name, "user name")->required();
    cmd->add_flag("--cluster-admin", *admin, "may do everything on every team");
    cmd->callback([&g, name, admin, action] {
      *action = [&g, name, admin] {
        pb::ClientRequest req;
        req.mutable_create_user()->set_name(*name);
        req.mutable_create_user()->set_cluster_admin(*admin);
        return RunDone(g, "user create", req);
      };
    });
  }
  user->add_subcommand("ls", "List users")->callback([&g, action] { *action = [&g] { return UserList(g); }; });
  {
    auto name = std::make_shared<std::string>();
    auto* cmd = user->add_subcommand("delete", "Delete a user and revoke its tokens");
    cmd->add_option("name", *name, "user name")->required();
    cmd->callback([&g, name, action] {
      *action = [&g, name] {
        pb::ClientRequest req;
        req.mutable_delete_user()->set_name(*name);
        return RunDone(g, "user delete", req);
      };
    });
  }
}

void AddTeamCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto* team = app.add_subcommand("team", "Teams and their members");
  team->require_subcommand(1);
  {
    auto name = std::make_shared<std::string>();
    auto description = std::make_shared<std::string>();
    auto* cmd = team->add_subcommand("create", "Create a team (cluster admin)");
    cmd->add_option("name", *name, "team name")->required();
    cmd->add_option("--description", *description, "what the team is");
    cmd->callback([&g, name, description, action] {
      *action = [&g, name, description] {
        pb::ClientRequest req;
        req.mutable_create_team()->set_name(*name);
        req.mutable_create_team()->set_description(*description);
        return RunDone(g, "team create", req);
      };
    });
  }
  {
    auto o = std::make_shared<QuotaOptions>();
    auto* cmd = team->add_subcommand(
        "quota", "Set a team's fair-share weight and its guaranteed/max slots on a pool (cluster admin)");
    cmd->add_option("team", o->team, "team name")->required();
    cmd->add_option("--weight", o->weight, "fair-share weight (> 0; shares are weight / sum of weights)")
        ->check(CLI::PositiveNumber);
    auto* guaranteed =
        cmd->add_option("--guaranteed", o->guaranteed, "slots the team may always reclaim on the pool (by preemption)")
            ->check(CLI::Range(int64_t{0}, int64_t{UINT32_MAX}));
    auto* max = cmd->add_option("--max", o->max, "slots it may hold there at most, borrowing included (0: no limit)")
                    ->check(CLI::Range(int64_t{0}, int64_t{UINT32_MAX}));
    guaranteed->needs(max);
    max->needs(guaranteed);
    cmd->add_option("--label", o->label, "the pool: nodes with label key=value (default: the whole cluster)")
        ->needs(guaranteed);
    cmd->callback([&g, o, action] { *action = [&g, o] { return TeamQuota(g, *o); }; });
  }
  team->add_subcommand("ls", "List teams and the members you may see")->callback([&g, action] {
    *action = [&g] { return TeamList(g); };
  });
  {
    auto name = std::make_shared<std::string>();
    auto* cmd = team->add_subcommand("delete", "Delete a team with no active job (cluster admin)");
    cmd->add_option("name", *name, "team name")->required();
    cmd->callback([&g, name, action] {
      *action = [&g, name] {
        pb::ClientRequest req;
        req.mutable_delete_team()->set_name(*name);
        return RunDone(g, "team delete", req);
      };
    });
  }
  {
    auto team_name = std::make_shared<std::string>();
    auto user = std::make_shared<std::string>();
    auto role = std::make_shared<std::string>("member");
    auto* cmd = team->add_subcommand("add-member", "Add a user to a team or change its role (team admin)");
    cmd->add_option("team", *team_name, "team name")->required();
    cmd->add_option("user", *user, "user name")->required();
    cmd->add_option("--role", *role, "viewer, member or admin")
        ->capture_default_str()
        ->check(CLI::IsMember({"viewer", "member", "admin"}));
    cmd->callback([&g, team_name, user, role, action] {
      *action = [&g, team_name, user, role] {
        pb::ClientRequest req;
        auto* r = req.mutable_set_role();
        r->set_team(*team_name);
        r->set_user(*user);
        r->set_role(*role == "viewer" ? pb::ROLE_VIEWER : *role == "admin" ? pb::ROLE_ADMIN : pb::ROLE_MEMBER);
        return RunDone(g, "team add-member", req);
      };
    });
  }
  {
    auto team_name = std::make_shared<std::string>();
    auto user = std::make_shared<std::string>();
    auto* cmd = team->add_subcommand("remove-member", "Remove a user from a team (team admin)");
    cmd->add_option("team", *team_name, "team name")->required();
    cmd->add_option("user", *user, "user name")->required();
    cmd->callback([&g, team_name, user, action] {
      *action = [&g, team_name, user] {
        pb::ClientRequest req;
        req.mutable_set_role()->set_team(*team_name);
        req.mutable_set_role()->set_user(*user);
        req.mutable_set_role()->set_role(pb::ROLE_UNSPECIFIED);
        return RunDone(g, "team remove-member", req);
      };
    });
  }
}

}  // namespace

void AddIdentityCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  app.add_subcommand("whoami", "Who your token says you are: user, cluster admin, teams and roles")
      ->callback([&g, action] { *action = [&g] { return WhoAmI(g); }; });
  AddTokenCommands(app, g, action);
  AddUserCommands(app, g, action);
  AddTeamCommands(app, g, action);
  auto o = std::make_shared<AuditOptions>();
  auto* cmd = app.add_subcommand("audit", "The audit log: every mutating request, who, team, result (oldest first)");
  cmd->add_option("--user", o->user, "only this user's requests");
  cmd->add_option("--team", o->team, "only this team's (a team admin may read their own team's)");
  cmd->add_option("--limit", o->limit, "the N most recent records")->capture_default_str();
  cmd->add_option("--before", o->before, "records before this sequence number (paging back)");
  cmd->callback([&g, o, action] { *action = [&g, o] { return Audit(g, *o); }; });
}

}  // namespace anneal::cli
