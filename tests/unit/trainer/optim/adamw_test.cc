// AdamW resumed from its state tensors continues as the uninterrupted optimizer would: a parameter that had a
// gradient before the checkpoint keeps moving by its moments in a step that gives it none (a routed expert no token
// chose), and one that never had a gradient stays where it is.
#include "trainer/optim/adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace anneal::optim {
namespace {

constexpr AdamWOptions kAdam{.lr = 0.1, .weight_decay = 0.01};

std::vector<std::pair<std::string, at::Tensor>> Cloned(const std::vector<std::pair<std::string, at::Tensor>>& s) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [k, t] : s) out.emplace_back(k, t.clone());
  return out;
}

TEST(AdamW, AResumedParameterMovesWithoutAGradientAsTheUninterruptedOneDoes) {
  torch::manual_seed(0);
  at::Tensor used = torch::randn({4}).requires_grad_(true), unused = torch::randn({3}).requires_grad_(true);
  AdamW uninterrupted({{"used", used}, {"unused", unused}}, kAdam);
  used.mutable_grad() = torch::randn({4});
  uninterrupted.Step(0.1);
  uninterrupted.ZeroGrad();  // zeroed in place: `used` keeps a (zero) gradient
  const auto state = Cloned(uninterrupted.StateTensors());
  const at::Tensor used_at_1 = used.detach().clone(), unused_at_1 = unused.detach().clone();
  uninterrupted.Step(0.1);  // no gradient this step: `used` moves by its first moment, `unused` stays
  ASSERT_FALSE(torch::equal(used, used_at_1));

  at::Tensor used2 = used_at_1.clone().requires_grad_(true), unused2 = unused_at_1.clone().requires_grad_(true);
  AdamW resumed({{"used", used2}, {"unused", unused2}}, kAdam);
  ASSERT_TRUE(resumed.LoadStateTensors(state, /*step=*/1).ok());
  resumed.Step(0.1);
  EXPECT_TRUE(torch::allclose(used2, used, /*rtol=*/0, /*atol=*/0)) << used2 << used;
  EXPECT_TRUE(torch::equal(unused2, unused_at_1));
  EXPECT_FALSE(unused2.grad().defined());
}

}  // namespace
}  // namespace anneal::optim
