// IdentityRegistry (users, teams, roles, tokens) and the pure authorization rules of coordinator/authz.h.
#include "coordinator/identity.h"

#include <gtest/gtest.h>

#include "coordinator/authz.h"
#include "temp_store.h"

namespace anneal::coordinator {
namespace {

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  // A restart: only what was committed survives.
  void Reopen() {
    identity_.reset();
    t_.Reopen();
    store_ = t_.store();
    identity_ = std::make_unique<IdentityRegistry>(t_.batch(), store_, t_.clock());
    ASSERT_TRUE(identity_->Recover().ok());
  }
  void Commit() { t_.Commit(); }

  testing::TempStore t_;
  storage::StateStore* store_ = nullptr;
  FakeClock& clock_ = *t_.clock();
  std::unique_ptr<IdentityRegistry> identity_;
};

TEST_F(IdentityTest, BootstrapCreatesTheClusterAdminOnceAndItsTokenAuthenticates) {
  ASSERT_TRUE(identity_->empty());
  auto token = identity_->Bootstrap("admin");
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  Commit();
  auto who = identity_->Authenticate(*token);
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  EXPECT_EQ(who->user, "admin");
  EXPECT_TRUE(who->cluster_admin);
  EXPECT_EQ(RoleIn(*who, "default"), pb::ROLE_ADMIN);
  auto again = identity_->Bootstrap("admin");
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  // Survives a restart; the store holds only the hash, never the token.
  Reopen();
  EXPECT_TRUE(identity_->Authenticate(*token).ok());
  std::string all_bytes;
  ASSERT_TRUE(store_
                  ->Scan(storage::Table::kTokens, "",
                         [&](std::string_view, std::string_view v) {
                           all_bytes += std::string(v);
                           return true;
                         })
                  .ok());
  EXPECT_EQ(all_bytes.find(token->substr(token->rfind('_') + 1)), std::string::npos);
}

TEST_F(IdentityTest, RevokedExpiredAndDeletedUsersTokensAreRefusedNamingWhy) {
  ASSERT_TRUE(identity_->Bootstrap("admin").ok());
  ASSERT_TRUE(identity_->CreateUser("bob", false, "admin").ok());
  auto forever = identity_->CreateToken("bob", 0, "");
  auto hour = identity_->CreateToken("bob", 3'600'000, "ci");
  ASSERT_TRUE(forever.ok() && hour.ok());
  EXPECT_TRUE(forever->second.secret_hash().empty());  // never handed out
  Commit();
  EXPECT_TRUE(identity_->Authenticate(hour->first).ok());
  clock_.Advance(3'600'000);
  auto expired = identity_->Authenticate(hour->first);
  EXPECT_EQ(expired.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(expired.status().message().find("expired"), std::string::npos) << expired.status().message();

  ASSERT_TRUE(identity_->RevokeToken(forever->second.token_id()).ok());
  ASSERT_TRUE(identity_->RevokeToken(forever->second.token_id()).ok());  // idempotent
  Commit();
  auto revoked = identity_->Authenticate(forever->first);
  EXPECT_NE(revoked.status().message().find("revoked"), std::string::npos) << revoked.status().message();
  Reopen();  // revocation is durable
  EXPECT_EQ(identity_->Authenticate(forever->first).status().code(), StatusCode::kUnauthenticated);

  auto third = identity_->CreateToken("bob", 0, "");
  ASSERT_TRUE(third.ok());
  ASSERT_TRUE(identity_->DeleteUser("bob").ok());
  EXPECT_EQ(identity_->Authenticate(third->first).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(identity_->FindToken(third->second.token_id())->revoked());
}

TEST_F(IdentityTest, NamesAreValidatedAndTheLastAdminCannotBeDeleted) {
  ASSERT_TRUE(identity_->Bootstrap("admin").ok());
  for (const std::string& bad : std::vector<std::string>{"", "Bob", "-x", "a/b", "a b", std::string(64, 'a')}) {
    Status st = identity_->CreateUser(bad, false, "admin");
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("user name"), std::string::npos) << st.message();
  }
  EXPECT_EQ(identity_->CreateTeam("default", "", "admin").code(), StatusCode::kAlreadyExists);
  Status last = identity_->DeleteUser("admin");
  EXPECT_EQ(last.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(last.message().find("last cluster admin"), std::string::npos) << last.message();
  EXPECT_EQ(identity_->SetRole("nope", "admin", pb::ROLE_MEMBER).code(), StatusCode::kNotFound);
  EXPECT_EQ(identity_->SetRole("default", "nobody", pb::ROLE_MEMBER).code(), StatusCode::kNotFound);
}

TEST_F(IdentityTest, DeletingATeamRemovesItsRoles) {
  ASSERT_TRUE(identity_->Bootstrap("admin").ok());
  ASSERT_TRUE(identity_->CreateTeam("nlp", "", "admin").ok());
  ASSERT_TRUE(identity_->CreateUser("bob", false, "admin").ok());
  ASSERT_TRUE(identity_->SetRole("nlp", "bob", pb::ROLE_MEMBER).ok());
  EXPECT_EQ(identity_->FindUser("bob")->teams().at("nlp"), pb::ROLE_MEMBER);
  ASSERT_TRUE(identity_->DeleteTeam("nlp").ok());
  Commit();
  Reopen();
  EXPECT_TRUE(identity_->FindUser("bob")->teams().empty());
  EXPECT_EQ(identity_->FindTeam("nlp"), nullptr);
}

TEST_F(IdentityTest, TheHttpPathAuthenticatesFromTheStoreWithTheSameRules) {
  auto token = identity_->Bootstrap("admin");
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(AuthenticateInStore(*store_, *token, clock_.NowMs()).status().code(), StatusCode::kUnauthenticated)
      << "not committed yet";
  Commit();
  auto who = AuthenticateInStore(*store_, *token, clock_.NowMs());
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  EXPECT_TRUE(who->cluster_admin);
  EXPECT_EQ(AuthenticateInStore(*store_, "", 0).status().code(), StatusCode::kUnauthenticated);
}

Principal Member(const std::string& user, std::map<std::string, pb::Role> teams) {
  return Principal{.user = user, .token_id = "t", .cluster_admin = false, .teams = std::move(teams)};
}

TEST(Authz, RolesIncludeTheOnesBelowAndRefusalsNameUserOperationRoleAndTeam) {
  const Principal viewer = Member("vera", {{"nlp", pb::ROLE_VIEWER}});
  EXPECT_TRUE(RequireTeamRole(viewer, pb::ROLE_VIEWER, "nlp", "read jobs of").ok());
  Status st = RequireTeamRole(viewer, pb::ROLE_MEMBER, "nlp", "submit jobs to");
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(st.message(),
            "user 'vera' may not submit jobs to team 'nlp': that needs role member or above in team "
            "'nlp' (vera is a viewer there)");
  Status other = RequireTeamRole(Member("max", {{"vision", pb::ROLE_ADMIN}}), pb::ROLE_MEMBER, "nlp", "cancel jobs of");
  EXPECT_NE(other.message().find("max is not in team 'nlp'"), std::string::npos) << other.message();
  EXPECT_TRUE(RequireTeamRole(Member("max", {{"vision", pb::ROLE_ADMIN}}), pb::ROLE_MEMBER, "vision", "x").ok());
  Principal admin{.user = "root", .cluster_admin = true};
  EXPECT_TRUE(RequireTeamRole(admin, pb::ROLE_ADMIN, "anything", "x").ok());
  EXPECT_TRUE(RequireClusterAdmin(admin, "drain nodes").ok());
  EXPECT_EQ(RequireClusterAdmin(viewer, "drain nodes").message(),
            "user 'vera' may not drain nodes: that needs cluster admin");
}

TEST(Authz, TheSubmitTeamIsTheOnlyMembershipOrMustBeNamed) {
  EXPECT_EQ(*ResolveSubmitTeam(Member("a", {{"nlp", pb::ROLE_MEMBER}, {"cv", pb::ROLE_VIEWER}}), ""), "nlp");
  auto several = ResolveSubmitTeam(Member("a", {{"nlp", pb::ROLE_MEMBER}, {"cv", pb::ROLE_ADMIN}}), "");
  EXPECT_EQ(several.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(several.status().message().find("cv, nlp"), std::string::npos) << several.status().message();
  EXPECT_EQ(ResolveSubmitTeam(Member("a", {}), "").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(*ResolveSubmitTeam(Principal{.user = "root", .cluster_admin = true}, ""), "default");
  EXPECT_EQ(*ResolveSubmitTeam(Member("a", {}), "cv"), "cv");  // authorized separately
}

}  // namespace
}  // namespace anneal::coordinator
