#include "protocol/curve.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace anneal::protocol {
namespace {

std::string Trim(std::string s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

// Writes `text` to `path` through a temp file created with `mode` (O_EXCL: never an existing file's mode),
// fsynced and renamed into place.
Status WriteKeyFile(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return UnavailableError(fmt::format("cannot create {}: {}", tmp, std::strerror(errno)));
  const std::string line = text + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  const bool synced = written && ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return UnavailableError(fmt::format("cannot write {}: {}", path, std::strerror(err)));
  }
  return Status::Ok();
}

}  // namespace

bool CurveAvailable() {
  return zmq_has("curve") == 1;
}

StatusOr<CurveKeyPair> GenerateCurveKeyPair() {
  std::array<char, kCurveKeyTextSize + 1> pub{}, sec{};
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0) {
    return FailedPreconditionError(
        fmt::format("cannot make a CurveZMQ keypair: {} (is libzmq built with libsodium?)", zmq_strerror(zmq_errno())));
  }
  return CurveKeyPair{std::string(pub.data()), std::string(sec.data())};
}

Status CheckCurveKeyText(std::string_view key, std::string_view what) {
  if (key.size() != kCurveKeyTextSize) {
    return InvalidArgumentError(
        fmt::format("{}: a CurveZMQ key is {} Z85 characters, got {} characters", what, kCurveKeyTextSize, key.size()));
  }
  const std::string text(key);
  std::array<uint8_t, 32> raw{};
  if (zmq_z85_decode(raw.data(), text.c_str()) == nullptr) {
    return InvalidArgumentError(fmt::format("{}: not a Z85-encoded CurveZMQ key", what));
  }
  return Status::Ok();
}

StatusOr<std::string> ReadCurveKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(fmt::format("CurveZMQ key file {} cannot be read: {}", path, std::strerror(errno)));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return DataLossError(fmt::format("CurveZMQ key file {} cannot be read", path));
  std::string key = Trim(text.str());
  RETURN_IF_ERROR(CheckCurveKeyText(key, fmt::format("CurveZMQ key file {}", path)));
  return key;
}

StatusOr<CurveKeyPair> LoadOrCreateServerKeys(const std::string& dir) {
  const std::string secret_path = dir + "/" + kCurveSecretKeyFile;
  const std::string public_path = dir + "/" + kCurvePublicKeyFile;
  std::error_code ec;
  const bool has_secret = std::filesystem::exists(secret_path, ec);
  const bool has_public = std::filesystem::exists(public_path, ec);
  if (!has_secret && !has_public) {
    ASSIGN_OR_RETURN(CurveKeyPair keys, GenerateCurveKeyPair());
    std::filesystem::create_directories(dir, ec);
    RETURN_IF_ERROR(WriteKeyFile(secret_path, keys.secret_key, 0600));
    RETURN_IF_ERROR(WriteKeyFile(public_path, keys.public_key, 0644));
    return keys;
  }
  if (!has_secret) {
    return FailedPreconditionError(fmt::format(
        "{} exists but the secret key {} is missing: restore it, or remove both files to make a new keypair "
        "(clients and agents must then pin the new public key)",
        public_path, secret_path));
  }
  CurveKeyPair keys;
  ASSIGN_OR_RETURN(keys.secret_key, ReadCurveKeyFile(secret_path));
  std::array<char, kCurveKeyTextSize + 1> derived{};
  if (zmq_curve_public(derived.data(), keys.secret_key.c_str()) != 0) {
    return FailedPreconditionError(
        fmt::format("cannot derive the public key of {}: {}", secret_path, zmq_strerror(zmq_errno())));
  }
  keys.public_key = derived.data();
  if (!has_public) {
    RETURN_IF_ERROR(WriteKeyFile(public_path, keys.public_key, 0644));
    return keys;
  }
  ASSIGN_OR_RETURN(std::string recorded, ReadCurveKeyFile(public_path));
  if (recorded != keys.public_key) {
    return FailedPreconditionError(fmt::format(
        "{} does not hold the public key of the secret key in {}: one of them was replaced", public_path, secret_path));
  }
  struct stat st {};
  if (::stat(secret_path.c_str(), &st) == 0 && (st.st_mode & 0077) != 0) {
    return FailedPreconditionError(
        fmt::format("{} is readable by other users (mode {:o}): chmod 600 it", secret_path, st.st_mode & 0777));
  }
  return keys;
}

Status ConfigureCurveServer(zmq::socket_t& socket, const CurveKeyPair& keys) {
  try {
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  } catch (const zmq::error_t& e) {
    return FailedPreconditionError(fmt::format("cannot make the socket a CurveZMQ server: {}", e.what()));
  }
  return Status::Ok();
}

Status ConfigureCurveClient(zmq::socket_t& socket, const std::string& server_public_key) {
  RETURN_IF_ERROR(CheckCurveKeyText(server_public_key, "the coordinator's public key"));
  ASSIGN_OR_RETURN(CurveKeyPair mine, GenerateCurveKeyPair());
  try {
    socket.set(zmq::sockopt::curve_serverkey, server_public_key);
    socket.set(zmq::sockopt::curve_publickey, mine.public_key);
    socket.set(zmq::sockopt::curve_secretkey, mine.secret_key);
  } catch (const zmq::error_t& e) {
    return FailedPreconditionError(fmt::format("cannot make the socket a CurveZMQ client: {}", e.what()));
  }
  return Status::Ok();
}

}  // namespace anneal::protocol
