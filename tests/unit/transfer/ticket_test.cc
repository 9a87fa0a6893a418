#include "transfer/ticket.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "tests/unit/transfer/transfer_test_support.h"

namespace anneal::transfer {
namespace {
using testing::TempDir;

constexpr int64_t kNow = 1'700'000'000'000;

Ticket Sample() {
  return {"node-a", "/models/llama", kNow + 60000, "stage", "job-7", ""};
}

void ExpectRefused(const StatusOr<Ticket>& t, StatusCode code, const std::string& reason) {
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), code) << t.status().ToString();
  EXPECT_NE(t.status().message().find(reason), std::string::npos) << t.status().message();
}

TEST(Ticket, ASignedTicketVerifiesWithEveryField) {
  const TicketSigner signer = TicketSigner::Generate();
  EXPECT_EQ(signer.public_key().size(), 64u);
  const std::string token = signer.Sign(Sample());
  EXPECT_LT(token.size(), 4096u);
  auto t = VerifyTicket(token, signer.public_key(), "node-a", kNow);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(*t, Sample());
}

TEST(Ticket, AnotherSignersTicketIsUnauthenticated) {
  const TicketSigner signer = TicketSigner::Generate();
  const TicketSigner other = TicketSigner::Generate();
  ExpectRefused(VerifyTicket(other.Sign(Sample()), signer.public_key(), "node-a", kNow), StatusCode::kUnauthenticated,
                "bad signature");
}

TEST(Ticket, ATicketForAnotherNodeIsPermissionDeniedNamingBoth) {
  const TicketSigner signer = TicketSigner::Generate();
  auto t = VerifyTicket(signer.Sign(Sample()), signer.public_key(), "node-b", kNow);
  ExpectRefused(t, StatusCode::kPermissionDenied, "node-a");
  EXPECT_NE(t.status().message().find("node-b"), std::string::npos);
}

TEST(Ticket, AnExpiredTicketIsDeadlineExceeded) {
  const TicketSigner signer = TicketSigner::Generate();
  ExpectRefused(VerifyTicket(signer.Sign(Sample()), signer.public_key(), "node-a", kNow + 60000),
                StatusCode::kDeadlineExceeded, "expired");
}

TEST(Ticket, TruncatedAlteredOrGarbageTokensAreUnauthenticatedWithTheirReason) {
  const TicketSigner signer = TicketSigner::Generate();
  const std::string token = signer.Sign(Sample());
  const std::string key = signer.public_key();
  ExpectRefused(VerifyTicket("", key, "node-a", kNow), StatusCode::kUnauthenticated, "malformed");
  ExpectRefused(VerifyTicket("hello world", key, "node-a", kNow), StatusCode::kUnauthenticated, "malformed");
  ExpectRefused(VerifyTicket(token.substr(0, token.size() - 10), key, "node-a", kNow), StatusCode::kUnauthenticated,
                "truncated signature");
  ExpectRefused(VerifyTicket(token.substr(0, token.find('.', 5)), key, "node-a", kNow), StatusCode::kUnauthenticated,
                "no signature");
  ExpectRefused(VerifyTicket("ant1.!!!.???", key, "node-a", kNow), StatusCode::kUnauthenticated, "bad base64");
  std::string altered = token;
  altered[8] = altered[8] == 'A' ? 'B' : 'A';  // a payload byte
  ExpectRefused(VerifyTicket(altered, key, "node-a", kNow), StatusCode::kUnauthenticated, "");
  ExpectRefused(VerifyTicket(std::string(10000, 'a'), key, "node-a", kNow), StatusCode::kUnauthenticated, "bytes");
  ExpectRefused(VerifyTicket(token, "not-a-key", "node-a", kNow), StatusCode::kInvalidArgument, "signer key");
}

TEST(TicketSigner, LoadOrCreateKeepsTheKeyAcrossRestartsWithASecretOnlyItsOwnerReads) {
  TempDir t;
  auto first = TicketSigner::LoadOrCreate(t.path + "/state");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  struct stat st {};
  ASSERT_EQ(::stat((t.path + "/state/transfer-sign.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = TicketSigner::LoadOrCreate(t.path + "/state");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->public_key(), first->public_key());
  EXPECT_TRUE(VerifyTicket(again->Sign(Sample()), first->public_key(), "node-a", kNow).ok());
}

TEST(TicketSigner, AReadableOrMismatchedKeyFileIsRefusedNamingIt) {
  TempDir t;
  ASSERT_TRUE(TicketSigner::LoadOrCreate(t.path).ok());
  const std::string secret = t.path + "/transfer-sign.key";
  ASSERT_EQ(::chmod(secret.c_str(), 0644), 0);
  auto readable = TicketSigner::LoadOrCreate(t.path);
  ASSERT_FALSE(readable.ok());
  EXPECT_NE(readable.status().message().find(secret), std::string::npos) << readable.status().message();
  ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);
  testing::WriteBytes(t.path + "/transfer-sign.pub", TicketSigner::Generate().public_key() + "\n");
  auto mismatched = TicketSigner::LoadOrCreate(t.path);
  ASSERT_FALSE(mismatched.ok());
  EXPECT_NE(mismatched.status().message().find("replaced"), std::string::npos) << mismatched.status().message();
  std::filesystem::remove(secret);
  auto lost = TicketSigner::LoadOrCreate(t.path);
  ASSERT_FALSE(lost.ok());
  EXPECT_NE(lost.status().message().find("missing"), std::string::npos) << lost.status().message();
}

}  // namespace
}  // namespace anneal::transfer
