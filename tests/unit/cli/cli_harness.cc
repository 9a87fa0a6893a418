#include "cli_harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/net.h"
#include "protocol/curve.h"
#include "protocol/framing.h"

namespace anneal::cli::testing {

namespace {
constexpr uint64_t kDropMarker = ~uint64_t{0};
}  // namespace

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "anneal-cli-test-XXXXXX").string();
  char* made = ::mkdtemp(tmpl.data());
  path_ = made ? made : "";
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::Write(const std::string& name, const std::string& content, bool executable) const {
  const std::string p = path_ + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(p).parent_path());
  std::ofstream(p, std::ios::trunc) << content;
  if (executable) ::chmod(p.c_str(), 0755);
  return p;
}

RunResult RunProgram(const std::string& binary, const std::vector<std::string>& args, const std::string& home,
                     const std::map<std::string, std::string>& env, double timeout_s) {
  RunResult result;
  int out_pipe[2], err_pipe[2];
  if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) return result;
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::close(out_pipe[0]), ::close(err_pipe[0]), ::close(out_pipe[1]), ::close(err_pipe[1]);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::setenv("HOME", home.c_str(), 1);
    for (const char* v : {"ANNEAL_COORDINATOR", "ANNEAL_TOKEN", "ANNEAL_HOME", "ANNEAL_INSECURE_PLAINTEXT"}) {
      ::unsetenv(v);
    }
    // FakeCoordinator is a Curve server with the test keypair: the CLI pins it unless the test says otherwise.
    ::setenv("ANNEAL_SERVER_KEY", FakeServerKeys().public_key.c_str(), 1);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  bool killed = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.exit_code = killed ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return result;
}

RunResult RunAnneal(const std::vector<std::string>& args, const std::string& home,
                    const std::map<std::string, std::string>& env, double timeout_s) {
  return RunProgram(ANNEAL_BINARY, args, home, env, timeout_s);
}

RunResult RunAnnealInTerminal(const std::vector<std::string>& args, const std::string& home, double timeout_s) {
  RunResult result;
  const auto start = std::chrono::steady_clock::now();
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) return result;
  if (pid == 0) {
    ::setenv("HOME", home.c_str(), 1);
    for (const char* v : {"ANNEAL_COORDINATOR", "ANNEAL_TOKEN", "ANNEAL_HOME"}) ::unsetenv(v);
    ::setenv("ANNEAL_SERVER_KEY", FakeServerKeys().public_key.c_str(), 1);
    std::vector<char*> argv = {const_cast<char*>(ANNEAL_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(ANNEAL_BINARY, argv.data());
    ::_exit(127);
  }
  const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  bool killed = false;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd fd{master, POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(master, buf, sizeof(buf));
    if (n <= 0) break;  // EIO once the child side is closed
    result.out.append(buf, static_cast<size_t>(n));
  }
  ::close(master);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.exit_code = killed ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return result;
}

const protocol::CurveKeyPair& FakeServerKeys() {
  static const protocol::CurveKeyPair keys = *protocol::GenerateCurveKeyPair();
  return keys;
}

std::string DeadAddress() {
  // A port that was free a moment ago: nothing listens there.
  return "tcp://127.0.0.1:" + std::to_string(FreeLoopbackPort().value());
}

FakeCoordinator::FakeCoordinator(Handler handler)
    : handler_(std::move(handler)), context_(1), socket_(context_, zmq::socket_type::router) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::rcvtimeo, 50);
  if (!protocol::ConfigureCurveServer(socket_, FakeServerKeys()).ok()) std::abort();
  socket_.bind("tcp://127.0.0.1:*");
  address_ = socket_.get(zmq::sockopt::last_endpoint);
  thread_ = std::thread([this] { Serve(); });
}

FakeCoordinator::~FakeCoordinator() {
  stop_ = true;
  thread_.join();
}

std::vector<pb::ClientRequest> FakeCoordinator::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

void FakeCoordinator::Serve() {
  while (!stop_) {
    auto frames = protocol::Receive(socket_, /*routed=*/true);
    if (!frames.ok()) continue;
    pb::ClientRequest req;
    if (!protocol::Parse(*frames, protocol::MessageKind::kClientRequest, &req).ok()) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(req);
    }
    pb::ClientReply reply = handler_(req);
    if (reply.request_id() == kDropMarker) continue;
    reply.set_request_id(req.request_id());
    (void)protocol::Send(socket_, protocol::MessageKind::kClientReply, reply, &*frames->routing_id).ok();
  }
}

pb::ClientReply DropReply() {
  pb::ClientReply reply;
  reply.set_request_id(kDropMarker);
  return reply;
}

pb::ClientReply ErrorReply(pb::ErrorCode code, const std::string& message) {
  pb::ClientReply reply;
  reply.mutable_error()->set_code(code);
  reply.mutable_error()->set_message(message);
  return reply;
}

}  // namespace anneal::cli::testing
