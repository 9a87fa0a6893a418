// TransferServer refusals: every one answers with an error naming what was refused and why, and the server
// serves the next request.
#include "transfer/server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "protocol/curve.h"
#include "tests/unit/transfer/transfer_test_support.h"
#include "transfer/client.h"

namespace anneal::transfer {
namespace {
namespace fs = std::filesystem;
using testing::RawCall;
using testing::ServerFixture;
using testing::TempDir;
using testing::WriteBytes;

struct ServerTest : ::testing::Test {
  void SetUp() override {
    WriteBytes(root + "/a.txt", "hello");
    WriteBytes(root + "/sub/b.txt", "world");
    WriteBytes(t.path + "/outside.txt", "secret");
  }
  transferpb::TransferRequest Read(const std::string& path, const std::string& ticket = "") {
    transferpb::TransferRequest r;
    r.set_request_id(7);
    r.set_ticket(ticket.empty() ? f.Ticket(root) : ticket);
    r.mutable_read()->set_path(path);
    r.mutable_read()->set_offset(0);
    r.mutable_read()->set_length(100);
    return r;
  }
  // The server still answers a good request after a refusal.
  void ExpectStillServes() {
    auto m = FetchManifest(f.SourceFor(root), "");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->files.size(), 2u);
  }
  void ExpectError(const transferpb::TransferReply& reply, StatusCode code, const std::string& words) {
    ASSERT_TRUE(reply.has_error());
    EXPECT_EQ(reply.error().code(), static_cast<int>(code)) << reply.error().message();
    EXPECT_NE(reply.error().message().find(words), std::string::npos) << reply.error().message();
  }

  TempDir t;
  std::string root = t.path + "/root";
  ServerFixture f;
};

TEST_F(ServerTest, ServesAManifestAndReads) {
  ExpectStillServes();
  auto reply = RawCall(*f.server, Read("sub/b.txt"));
  ASSERT_FALSE(reply.has_error()) << reply.error().message();
  EXPECT_EQ(reply.request_id(), 7u);
  EXPECT_EQ(reply.read().file_size(), 5u);
  EXPECT_EQ(testing::RawRequest(*f.server, {Read("sub/b.txt").SerializeAsString()}).at(1), "world");
}

TEST_F(ServerTest, LocalManifestIsTheManifestReadersGet) {
  auto local = f.server->LocalManifest(root);
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  auto remote = FetchManifest(f.SourceFor(root), "");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  EXPECT_EQ(local->Id(), remote->Id());
}

TEST_F(ServerTest, PathsLeavingTheRootAreRefusedNamingThePath) {
  fs::create_symlink(t.path + "/outside.txt", root + "/sub/link");
  ExpectError(RawCall(*f.server, Read("../outside.txt")), StatusCode::kPermissionDenied, "../outside.txt");
  ExpectError(RawCall(*f.server, Read("sub/../../outside.txt")), StatusCode::kPermissionDenied, "..");
  ExpectError(RawCall(*f.server, Read(t.path + "/outside.txt")), StatusCode::kPermissionDenied, "absolute");
  ExpectError(RawCall(*f.server, Read("sub/link")), StatusCode::kPermissionDenied, "outside the ticket's root");
  auto manifest = FetchManifest(f.SourceFor(root), "../");
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(manifest.status().message().find(f.server->endpoint()), std::string::npos);
  ExpectError(RawCall(*f.server, Read("nope.txt")), StatusCode::kNotFound, "nope.txt");
  EXPECT_EQ(f.server->stats().refused, 6u);
  fs::remove(root + "/sub/link");
  ExpectStillServes();
}

TEST_F(ServerTest, TicketsForAnotherNodeExpiredOrUnsignedAreRefused) {
  ExpectError(RawCall(*f.server, Read("a.txt", f.Ticket(root, 60000, "node-b"))), StatusCode::kPermissionDenied,
              "node-b");
  const std::string short_lived = f.Ticket(root, 1000);
  f.now->fetch_add(2000);
  ExpectError(RawCall(*f.server, Read("a.txt", short_lived)), StatusCode::kDeadlineExceeded, "expired");
  ExpectError(RawCall(*f.server, Read("a.txt", "ant1.e30.AAAA")), StatusCode::kUnauthenticated, "ticket refused");
  ExpectError(RawCall(*f.server, Read("a.txt", "no ticket at all")), StatusCode::kUnauthenticated, "malformed");
  const TicketSigner stranger = TicketSigner::Generate();
  const std::string forged = stranger.Sign({"node-a", root, f.now->load() + 60000, "stage", "job-1", ""});
  ExpectError(RawCall(*f.server, Read("a.txt", forged)), StatusCode::kUnauthenticated, "bad signature");
  // A ticket for another root does not reach this one.
  WriteBytes(t.path + "/other/c.txt", "c");
  ExpectError(RawCall(*f.server, Read("../root/a.txt", f.Ticket(t.path + "/other"))), StatusCode::kPermissionDenied,
              "..");
  ExpectStillServes();
}

TEST_F(ServerTest, WithoutASignerKeyEveryRequestIsUnavailableUntilItIsSet) {
  const std::string key = f.signer.public_key();
  f.server->SetSignerPublicKey("");
  ExpectError(RawCall(*f.server, Read("a.txt")), StatusCode::kUnavailable, "signer key");
  auto m = FetchManifest(f.SourceFor(root), "");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnavailable);
  f.server->SetSignerPublicKey(key);
  ExpectStillServes();
}

TEST_F(ServerTest, GarbageFramesGetAnErrorAndTheServerStillServes) {
  auto garbage = testing::RawRequest(*f.server, {"\x08\xff\xff garbage"});
  ASSERT_EQ(garbage.size(), 1u);
  transferpb::TransferReply reply;
  ASSERT_TRUE(reply.ParseFromString(garbage[0]));
  ExpectError(reply, StatusCode::kInvalidArgument, "not a transfer request");
  auto two = testing::RawRequest(*f.server, {Read("a.txt").SerializeAsString(), "extra"});
  ASSERT_EQ(two.size(), 1u);
  ASSERT_TRUE(reply.ParseFromString(two[0]));
  ExpectError(reply, StatusCode::kInvalidArgument, "one frame");
  auto big_request = Read("a.txt");
  big_request.set_ticket(std::string(100 << 10, 'x'));
  ExpectError(RawCall(*f.server, big_request), StatusCode::kInvalidArgument, "more than");
  auto zero = Read("a.txt");
  zero.mutable_read()->set_length(0);
  ExpectError(RawCall(*f.server, zero), StatusCode::kInvalidArgument, "1 to");
  auto huge = Read("a.txt");
  huge.mutable_read()->set_length(kMaxChunkBytes + 1);
  ExpectError(RawCall(*f.server, huge), StatusCode::kInvalidArgument, "1 to");
  transferpb::TransferRequest empty;
  empty.set_ticket(f.Ticket(root));
  ExpectError(RawCall(*f.server, empty), StatusCode::kInvalidArgument, "no operation");
  ExpectStillServes();
}

TEST_F(ServerTest, AClientWithTheWrongServerKeyTimesOutNamingTheEndpoint) {
  Source wrong = f.SourceFor(root);
  wrong.server_public_key = protocol::GenerateCurveKeyPair()->public_key;
  FetchOptions options;
  options.timeout_ms = 200;
  options.manifest_timeout_ms = 200;
  options.max_retries = 2;
  const auto start = std::chrono::steady_clock::now();
  auto m = FetchManifest(wrong, "", options);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(m.status().message().find(f.server->endpoint()), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("3 tries"), std::string::npos) << m.status().message();
  EXPECT_LT(took, std::chrono::seconds(3));
  ExpectStillServes();
}

TEST_F(ServerTest, ARequestTimedOutWhileTheServerWasDownIsRetriedWhenItIsBack) {
  const Source source = f.SourceFor(root);
  ServerOptions options;
  options.bind_endpoint = f.server->endpoint();  // the same port, after a restart
  options.node_id = "node-a";
  options.signer_public_key = f.signer.public_key();
  options.now_ms = [clock = f.now] { return clock->load(); };
  auto keys = protocol::GenerateCurveKeyPair();
  f.server.reset();
  // The restarted server keeps its keypair (LoadOrCreateServerKeys); here the test's source pins it.
  Source pinned = source;
  pinned.server_public_key = keys->public_key;
  options.server_keys = *keys;
  std::thread restart([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto started = TransferServer::Start(options);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    f.server = std::move(started).value();
  });
  FetchOptions fetch;
  fetch.timeout_ms = 200;
  fetch.manifest_timeout_ms = 200;
  fetch.max_retries = 10;
  auto m = FetchManifest(pinned, "", fetch);
  restart.join();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->files.size(), 2u);
}

TEST_F(ServerTest, StartRefusesBadOptionsAndAnEndpointItCannotBind) {
  ServerOptions options;
  options.bind_endpoint = "tcp://127.0.0.1:0";
  options.node_id = "";
  options.server_keys = *protocol::GenerateCurveKeyPair();
  EXPECT_EQ(TransferServer::Start(options).status().code(), StatusCode::kInvalidArgument);
  options.node_id = "n";
  options.bind_endpoint = "tcp://256.1.1.1:1";
  auto bad = TransferServer::Start(options);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("256.1.1.1"), std::string::npos) << bad.status().message();
}

}  // namespace
}  // namespace anneal::transfer
