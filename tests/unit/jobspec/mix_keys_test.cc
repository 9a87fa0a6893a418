// mix_strategy and interleave_probs (LLaMA-Factory's data args, trainer/data/mix.h does the mixing).
#include <gtest/gtest.h>

#include <string>

#include "jobspec/jobspec.h"

namespace anneal::jobspec {
namespace {

constexpr const char* kBase = "model_name_or_path: /m\ndataset: a,b\noutput_dir: /o\n";

TEST(MixKeys, StrategyAndProbabilitiesInBothSpellingsRoundTrip) {
  auto flat =
      ParseJobSpec(std::string(kBase) + "mix_strategy: interleave_under\ninterleave_probs: 0.7, 0.3\n", "job.yaml");
  ASSERT_TRUE(flat.ok()) << flat.status().message();
  EXPECT_EQ(flat->data.mix_strategy, "interleave_under");
  EXPECT_EQ(flat->data.interleave_probs, (std::vector<double>{0.7, 0.3}));
  auto flat_again = ParseJobSpec(ToYaml(*flat), "round-trip");
  ASSERT_TRUE(flat_again.ok()) << flat_again.status().message();
  EXPECT_EQ(flat_again->data.interleave_probs, (std::vector<double>{0.7, 0.3}));
  auto list =
      ParseJobSpec(std::string(kBase) + "mix_strategy: interleave_once\ninterleave_probs: [0.25, 0.75]\n", "job.yaml");
  ASSERT_TRUE(list.ok()) << list.status().message();
  EXPECT_EQ(list->data.interleave_probs, (std::vector<double>{0.25, 0.75}));
  auto again = ParseJobSpec(ToYaml(*list), "round-trip");
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->data, list->data);
  auto plain = ParseJobSpec(kBase, "job.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->data.mix_strategy, "concat");
  EXPECT_TRUE(plain->data.interleave_probs.empty());
}

TEST(MixKeys, BadValuesAreRefusedNamingTheKey) {
  auto strategy = ParseJobSpec(std::string(kBase) + "mix_strategy: shuffle\n", "job.yaml");
  ASSERT_FALSE(strategy.ok());
  EXPECT_NE(strategy.status().message().find("mix_strategy"), std::string::npos) << strategy.status().message();
  EXPECT_NE(strategy.status().message().find("interleave_over"), std::string::npos) << strategy.status().message();
  for (const char* probs : {"0.5,-0.5", "half,half", "{a: 1}"}) {
    auto p = ParseJobSpec(std::string(kBase) + "interleave_probs: " + probs + "\n", "job.yaml");
    ASSERT_FALSE(p.ok()) << probs;
    EXPECT_NE(p.status().message().find("interleave_probs"), std::string::npos) << p.status().message();
  }
}

TEST(MixKeys, ProbabilitiesNeedInterleavingAndOnePerDataset) {
  auto concat = ParseJobSpec(std::string(kBase) + "interleave_probs: 0.5,0.5\n", "job.yaml");
  ASSERT_FALSE(concat.ok());
  EXPECT_NE(concat.status().message().find("only valid with an interleave_* mix_strategy"), std::string::npos)
      << concat.status().message();
  auto count =
      ParseJobSpec(std::string(kBase) + "mix_strategy: interleave_over\ninterleave_probs: 0.2,0.3,0.5\n", "job.yaml");
  ASSERT_FALSE(count.ok());
  EXPECT_NE(count.status().message().find("3 probabilities for 2 datasets (dataset)"), std::string::npos)
      << count.status().message();
  auto eval = ParseJobSpec(
      std::string(kBase) + "eval_dataset: x\nmix_strategy: interleave_over\ninterleave_probs: 0.5,0.5\n", "job.yaml");
  ASSERT_FALSE(eval.ok());
  EXPECT_NE(eval.status().message().find("(eval_dataset)"), std::string::npos) << eval.status().message();
}

// LLaMA-Factory's streaming: refused by name, pointing at the bounded-memory cache build; buffer_size (read only
// with streaming) ignored with a warning; streaming: false changes nothing.
TEST(MixKeys, StreamingIsRefusedPointingAtTheBoundedMemoryBuild) {
  auto streaming = ParseJobSpec(std::string(kBase) + "streaming: true\nbuffer_size: 128\nmax_steps: 10\n", "job.yaml");
  ASSERT_FALSE(streaming.ok());
  const std::string message = streaming.status().message();
  EXPECT_NE(message.find("'streaming'"), std::string::npos) << message;
  EXPECT_NE(message.find("buffered shuffle"), std::string::npos) << message;
  EXPECT_NE(message.find("files larger than memory need no key"), std::string::npos) << message;
  auto plain = ParseJobSpec(kBase, "job.yaml");
  auto off = ParseJobSpec(std::string(kBase) + "streaming: false\nbuffer_size: 128\n", "job.yaml");
  ASSERT_TRUE(plain.ok() && off.ok()) << off.status().message();
  EXPECT_EQ(off->data, plain->data);
  bool warned = false;
  for (const std::string& w : off->warnings) warned |= w.find("'buffer_size'") != std::string::npos;
  EXPECT_TRUE(warned);
}

}  // namespace
}  // namespace anneal::jobspec
