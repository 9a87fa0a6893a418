// The world size belongs to the launcher: a spec without nodes / gpus_per_node is valid for any world size that
// tp x pp divides (the trainer checks against WORLD_SIZE); a spec that names them is checked at parse time and
// keeps them through ToYaml.
#include <gtest/gtest.h>

#include "jobspec/jobspec.h"

namespace anneal::jobspec {
namespace {

constexpr const char* kLlamaFactory =
    "model_name_or_path: /m\ndataset: d\noutput_dir: /o\ntensor_model_parallel_size: 2\n"
    "pipeline_model_parallel_size: 2\n";

TEST(WorldSize, ASpecWithoutResourceKeysLeavesTheWorldToTheLauncher) {
  auto spec = ParseJobSpec(kLlamaFactory, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_FALSE(spec->resources.world_size_given);
  const std::string yaml = ToYaml(*spec);
  EXPECT_EQ(yaml.find("nodes:"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("gpus_per_node:"), std::string::npos) << yaml;
  auto again = ParseJobSpec(yaml, "resolved.yaml");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  spec->warnings.clear();
  again->warnings.clear();
  EXPECT_EQ(*again, *spec) << "the round trip keeps 'not given'";
}

TEST(WorldSize, ResourceKeysAreCheckedAtParseTimeAndKept) {
  auto spec = ParseJobSpec(std::string(kLlamaFactory) + "nodes: 2\ngpus_per_node: 4\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_TRUE(spec->resources.world_size_given);
  EXPECT_EQ(spec->resources.world_size(), 8);
  EXPECT_EQ(spec->resources.data_parallel(), 2);
  auto again = ParseJobSpec(ToYaml(*spec), "resolved.yaml");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->resources.world_size_given);
  EXPECT_EQ(again->resources.world_size(), 8);

  auto bad = ParseJobSpec(std::string(kLlamaFactory) + "gpus_per_node: 2\n", "job.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("= 4 does not divide the world size 2 (nodes 1 x gpus_per_node 2)"),
            std::string::npos)
      << bad.status().message();
}

TEST(WorldSize, OneResourceKeyIsEnoughToFixTheWorld) {
  auto spec = ParseJobSpec("model_name_or_path: /m\ndataset: d\noutput_dir: /o\nnodes: 1\n", "job.yaml");
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(spec->resources.world_size_given);
  EXPECT_EQ(spec->resources.world_size(), 1);
}

}  // namespace
}  // namespace anneal::jobspec
