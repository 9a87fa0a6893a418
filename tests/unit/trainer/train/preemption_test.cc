// Preemption requests (trainer/train/preemption.h): SIGUSR1 only sets a flag and counts, and with SA_RESTART a
// blocking system call in flight (a read waiting on a pipe, like a collective waiting on its peer) carries on
// instead of failing with EINTR.
#include "trainer/train/preemption.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace anneal::train {
namespace {

TEST(Preemption, Sigusr1SetsTheFlagAndCountsWithoutKillingTheProcess) {
  InstallPreemptHandler();
  ResetPreemptRequest();
  EXPECT_FALSE(PreemptRequested());
  ASSERT_EQ(::raise(SIGUSR1), 0);
  EXPECT_TRUE(PreemptRequested());
  EXPECT_EQ(PreemptRequestCount(), 1);
  ASSERT_EQ(::raise(SIGUSR1), 0);
  EXPECT_EQ(PreemptRequestCount(), 2);  // a launcher forwards each new one
  InstallPreemptHandler();              // idempotent: the count stays
  EXPECT_EQ(PreemptRequestCount(), 2);
  ResetPreemptRequest();
  EXPECT_FALSE(PreemptRequested());
}

TEST(Preemption, ABlockingReadContinuesThroughTheSignal) {
  int to_child[2];
  int from_child[2];
  ASSERT_EQ(::pipe(to_child), 0);
  ASSERT_EQ(::pipe(from_child), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    InstallPreemptHandler();
    ResetPreemptRequest();
    const char ready = 'r';
    if (::write(from_child[1], &ready, 1) != 1) _exit(10);
    char byte = 0;
    const ssize_t n = ::read(to_child[0], &byte, 1);  // SIGUSR1 arrives while this waits
    if (n != 1) _exit(errno == EINTR ? 11 : 12);
    _exit(PreemptRequested() && byte == 'x' ? 0 : 13);
  }
  char ready = 0;
  ASSERT_EQ(::read(from_child[0], &ready, 1), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the child is blocked in read(2) by now
  ASSERT_EQ(::kill(pid, SIGUSR1), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(::write(to_child[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of the signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "11: read failed with EINTR; 13: the flag was not set";
  for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) ::close(fd);
}

TEST(Preemption, TheExitCodeIsTheAgentsPreemptedCode) {
  EXPECT_EQ(kPreemptedExitCode, 75);  // protocol::kPreemptedExitCode; the agent reports TASK_PREEMPTED on it
}

}  // namespace
}  // namespace anneal::train
