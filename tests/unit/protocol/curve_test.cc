// The coordinator's CurveZMQ key files (protocol/curve.h): made once with a private secret file, reused, and
// every damaged state an error naming the file; key text checks; a Curve pair of real sockets.
#include "protocol/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace anneal::protocol {
namespace {

class KeyDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("anneal-curve-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const char* name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST(Curve, IsAvailableAndMakesKeys) {
  ASSERT_TRUE(CurveAvailable());
  auto keys = GenerateCurveKeyPair();
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->public_key.size(), kCurveKeyTextSize);
  EXPECT_TRUE(CheckCurveKeyText(keys->public_key, "k").ok());
}

TEST(Curve, KeyTextChecksNameTheSource) {
  Status short_key = CheckCurveKeyText("abc", "--server-key");
  EXPECT_EQ(short_key.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_key.message().find("--server-key"), std::string::npos);
  EXPECT_NE(short_key.message().find("got 3 characters"), std::string::npos);
  Status bad_chars = CheckCurveKeyText(std::string(40, '"'), "the config");
  EXPECT_EQ(bad_chars.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_chars.message().find("not a Z85"), std::string::npos) << bad_chars.message();
}

TEST_F(KeyDir, FirstStartMakesAPairWithAPrivateSecretAndLaterStartsReuseIt) {
  auto made = LoadOrCreateServerKeys(dir_.string());
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  struct stat st {};
  ASSERT_EQ(::stat(Path(kCurveSecretKeyFile).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto pub = ReadCurveKeyFile(Path(kCurvePublicKeyFile));
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(*pub, made->public_key);
  auto again = LoadOrCreateServerKeys(dir_.string());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->public_key, made->public_key);
  EXPECT_EQ(again->secret_key, made->secret_key);
}

TEST_F(KeyDir, ACorruptSecretIsAnErrorNamingTheFile) {
  ASSERT_TRUE(LoadOrCreateServerKeys(dir_.string()).ok());
  std::ofstream(Path(kCurveSecretKeyFile), std::ios::trunc) << "corrupt\n";
  auto st = LoadOrCreateServerKeys(dir_.string());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find(Path(kCurveSecretKeyFile)), std::string::npos) << st.status().message();
}

TEST_F(KeyDir, AnUnreadableSecretIsAnErrorNamingTheFile) {
  ASSERT_TRUE(LoadOrCreateServerKeys(dir_.string()).ok());
  std::filesystem::remove(Path(kCurveSecretKeyFile));
  std::filesystem::create_directory(Path(kCurveSecretKeyFile));  // exists, cannot be read as a file
  auto st = LoadOrCreateServerKeys(dir_.string());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find(Path(kCurveSecretKeyFile)), std::string::npos) << st.status().message();
}

TEST_F(KeyDir, APublicKeyWithoutItsSecretIsNeverReplacedSilently) {
  ASSERT_TRUE(LoadOrCreateServerKeys(dir_.string()).ok());
  std::filesystem::remove(Path(kCurveSecretKeyFile));
  auto st = LoadOrCreateServerKeys(dir_.string());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.status().message().find("is missing"), std::string::npos) << st.status().message();
}

TEST_F(KeyDir, AMismatchedPublicKeyOrAReadableSecretIsRefused) {
  ASSERT_TRUE(LoadOrCreateServerKeys(dir_.string()).ok());
  const std::string original = *ReadCurveKeyFile(Path(kCurvePublicKeyFile));
  std::ofstream(Path(kCurvePublicKeyFile), std::ios::trunc) << GenerateCurveKeyPair()->public_key << "\n";
  auto mismatch = LoadOrCreateServerKeys(dir_.string());
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("does not hold the public key"), std::string::npos);
  std::ofstream(Path(kCurvePublicKeyFile), std::ios::trunc) << original << "\n";
  ::chmod(Path(kCurveSecretKeyFile).c_str(), 0644);
  auto readable = LoadOrCreateServerKeys(dir_.string());
  ASSERT_FALSE(readable.ok());
  EXPECT_NE(readable.status().message().find("chmod 600"), std::string::npos) << readable.status().message();
  // A missing public file is rewritten from the secret.
  ::chmod(Path(kCurveSecretKeyFile).c_str(), 0600);
  std::filesystem::remove(Path(kCurvePublicKeyFile));
  auto rewritten = LoadOrCreateServerKeys(dir_.string());
  ASSERT_TRUE(rewritten.ok()) << rewritten.status().ToString();
  EXPECT_EQ(rewritten->public_key, original);
}

TEST(Curve, AClientWithThePinnedKeyTalksToTheServer) {
  zmq::context_t ctx;
  const auto keys = *GenerateCurveKeyPair();
  zmq::socket_t server(ctx, zmq::socket_type::rep), client(ctx, zmq::socket_type::req);
  ASSERT_TRUE(ConfigureCurveServer(server, keys).ok());
  server.bind("tcp://127.0.0.1:*");
  ASSERT_TRUE(ConfigureCurveClient(client, keys.public_key).ok());
  client.set(zmq::sockopt::rcvtimeo, 5000);
  server.set(zmq::sockopt::rcvtimeo, 5000);
  client.connect(server.get(zmq::sockopt::last_endpoint));
  client.send(zmq::str_buffer("ping"));
  zmq::message_t got;
  ASSERT_TRUE(server.recv(got));
  EXPECT_EQ(got.to_string(), "ping");
  EXPECT_EQ(ConfigureCurveClient(client, "short").code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anneal::protocol
