// Stage dpo's pure pieces (trainer/train/preference.h) against plain scalar references: the sequence log-probability
// of the labels, and each preference loss with its rewards. The trained whole is checked against LLaMA-Factory's
// DPO trainer code by tests/parity/train/dpo_parity.py.
#include "trainer/train/preference.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace anneal::train {
namespace {

double LogSigmoid(double x) {
  return -std::log1p(std::exp(-x));
}

TEST(SequenceLogps, SumsTheNextTokenLogProbabilitiesOfTheLabelsOnly) {
  torch::manual_seed(0);
  const torch::Tensor logits = torch::randn({2, 5, 7}, torch::kFloat64);
  const torch::Tensor labels = torch::tensor({{-100, -100, 3, 1, -100}, {-100, 6, 0, 2, 5}}, torch::kLong);
  auto [sum, count] = SequenceLogps(model::LinearFactory(), logits, labels);
  for (int64_t b = 0; b < 2; ++b) {
    double want = 0;
    int tokens = 0;
    for (int64_t t = 1; t < 5; ++t) {
      const int64_t label = labels[b][t].item<int64_t>();
      if (label == -100) continue;
      // position t - 1 predicts token t
      double norm = 0;
      for (int64_t v = 0; v < 7; ++v) norm += std::exp(logits[b][t - 1][v].item<double>());
      want += logits[b][t - 1][label].item<double>() - std::log(norm);
      ++tokens;
    }
    EXPECT_NEAR(sum[b].item<double>(), want, 1e-5) << "row " << b;
    EXPECT_EQ(count[b].item<double>(), tokens);
  }
}

TEST(PreferenceLoss, EachLossAndItsRewardsFollowTheirFormulas) {
  const torch::Tensor chosen = torch::tensor({-3.0, -0.5}, torch::kFloat64);
  const torch::Tensor rejected = torch::tensor({-2.0, -4.0}, torch::kFloat64);
  const torch::Tensor ref_chosen = torch::tensor({-2.5, -1.0}, torch::kFloat64);
  const torch::Tensor ref_rejected = torch::tensor({-2.2, -3.0}, torch::kFloat64);
  const torch::Tensor chosen_avg = torch::tensor({-0.3, -0.1}, torch::kFloat64);
  const double beta = 0.2;
  for (const std::string loss : {"sigmoid", "hinge", "ipo", "orpo", "simpo"}) {
    for (const double ftx : {0.0, 0.5}) {
      PreferenceOptions o{loss, beta, ftx, 0.7};
      const PreferenceTerms t = PreferenceLoss(o, chosen, rejected, ref_chosen, ref_rejected, chosen_avg);
      for (int64_t i = 0; i < 2; ++i) {
        const double c = chosen[i].item<double>(), r = rejected[i].item<double>();
        const double rc = ref_chosen[i].item<double>(), rr = ref_rejected[i].item<double>();
        const double d = (c - r) - (rc - rr);
        double want = 0, reward_c = beta * (c - rc), reward_r = beta * (r - rr);
        if (loss == "sigmoid") want = -LogSigmoid(beta * d);
        if (loss == "hinge") want = std::max(0.0, 1 - beta * d);
        if (loss == "ipo") want = std::pow(d - 1 / (2 * beta), 2);
        if (loss == "orpo") {
          const double log_odds = (c - r) - (std::log1p(-std::exp(c)) - std::log1p(-std::exp(r)));
          want = -c - beta * LogSigmoid(log_odds);
        }
        if (loss == "simpo") want = -LogSigmoid(beta * ((c - r) - 0.7 / beta));
        if (loss == "orpo" || loss == "simpo") reward_c = beta * c, reward_r = beta * r;
        want += ftx * -chosen_avg[i].item<double>();
        SCOPED_TRACE(loss + " ftx " + std::to_string(ftx) + " pair " + std::to_string(i));
        EXPECT_NEAR(t.losses[i].item<double>(), want, 1e-12);
        EXPECT_NEAR(t.chosen_rewards[i].item<double>(), reward_c, 1e-12);
        EXPECT_NEAR(t.rejected_rewards[i].item<double>(), reward_r, 1e-12);
      }
    }
  }
}

TEST(PreferenceOptions, OnlyTheReferenceFreeLossesNeedNoReferenceAndSomeAverageTheLogps) {
  EXPECT_TRUE((PreferenceOptions{"sigmoid"}).uses_reference());
  EXPECT_TRUE((PreferenceOptions{"ipo"}).uses_reference());
  EXPECT_FALSE((PreferenceOptions{"orpo"}).uses_reference());
  EXPECT_FALSE((PreferenceOptions{"simpo"}).uses_reference());
  EXPECT_FALSE((PreferenceOptions{"sigmoid"}).averages_logps());
  EXPECT_FALSE((PreferenceOptions{"hinge"}).averages_logps());
  EXPECT_TRUE((PreferenceOptions{"ipo"}).averages_logps());
  EXPECT_TRUE((PreferenceOptions{"simpo"}).averages_logps());
}

}  // namespace
}  // namespace anneal::train
