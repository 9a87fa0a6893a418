// RngState: what activation checkpointing and checkpoints restore. The CPU half runs everywhere; the CUDA half
// runs on a GPU machine (scripts/device-bench.sh runs trainer_test there) and is skipped elsewhere.
#include "trainer/model/rng.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace anneal::model {
namespace {

TEST(RngState, RestoringTheCpuStateRepeatsTheSameDraws) {
  torch::manual_seed(3);
  const RngState before = RngState::Capture(torch::kCPU);
  EXPECT_FALSE(before.device.defined()) << "a CPU device has no device generator";
  const at::Tensor first = torch::rand({8});
  const at::Tensor mask = torch::dropout(torch::ones({64}), 0.5, /*train=*/true);
  before.Restore();
  EXPECT_TRUE(torch::equal(torch::rand({8}), first));
  EXPECT_TRUE(torch::equal(torch::dropout(torch::ones({64}), 0.5, true), mask)) << "the same dropout mask";
}

TEST(RngState, RestoringTheCudaStateRepeatsTheSameDropoutMaskOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device gpu(torch::kCUDA, 0);
  torch::manual_seed(5);
  const RngState before = RngState::Capture(gpu);
  ASSERT_TRUE(before.device.defined());
  const at::Tensor mask = torch::dropout(torch::ones({4096}, gpu), 0.5, true).cpu();
  const at::Tensor cpu_draw = torch::rand({4});
  before.Restore();
  EXPECT_TRUE(torch::equal(torch::dropout(torch::ones({4096}, gpu), 0.5, true).cpu(), mask));
  EXPECT_TRUE(torch::equal(torch::rand({4}), cpu_draw));
}

}  // namespace
}  // namespace anneal::model
