// The sharing keys of the job spec (scheduling.time_limit, node_selector, max_preemptions): their spellings,
// defaults, limits, the messages of their refusals, and the round trip through ToYaml.
#include <gtest/gtest.h>

#include <string>

#include "jobspec/jobspec.h"
#include "jobspec/values.h"

namespace anneal::jobspec {
namespace {

constexpr const char* kBase = "model_name_or_path: /m\ndataset: d\noutput_dir: /o\n";

StatusOr<JobSpec> Parse(const std::string& more, const std::vector<std::string>& overrides = {}) {
  return ParseJobSpec(std::string(kBase) + more, "job.yaml", overrides);
}

std::string Error(const std::string& more, const std::vector<std::string>& overrides = {}) {
  auto spec = Parse(more, overrides);
  EXPECT_FALSE(spec.ok()) << more;
  return spec.ok() ? "" : spec.status().message();
}

TEST(JobSpecSharingKeys, DefaultsAreNoLimitNoSelectorAndTenPreemptions) {
  auto spec = Parse("");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_FALSE(spec->scheduling.time_limit_s.has_value());
  EXPECT_TRUE(spec->scheduling.node_selector.empty());
  EXPECT_EQ(spec->scheduling.max_preemptions, 10);
}

TEST(JobSpecSharingKeys, TimeLimitAcceptsDurationsAndSeconds) {
  const std::pair<const char*, int64_t> cases[] = {
      {"90m", 5400}, {"2h", 7200}, {"1h30m", 5400}, {"5400", 5400}, {"45s", 45}, {"1d12h", 129600}, {"365d", 31536000},
  };
  for (const auto& [text, seconds] : cases) {
    auto spec = Parse(std::string("time_limit: ") + text + "\n");
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status().ToString();
    EXPECT_EQ(spec->scheduling.time_limit_s, seconds) << text;
  }
  auto nested = Parse("scheduling:\n  time_limit: 2h\n");
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_EQ(nested->scheduling.time_limit_s, 7200);
}

TEST(JobSpecSharingKeys, BadTimeLimitsNameTheKeyTheValueAndWhatIsAllowed) {
  for (const char* bad : {"0", "-5", "0m", "1.5h", "90x", "30m1h", "1h1h", "h", "366d", "1h 30m", "[1h]"}) {
    const std::string message = Error(std::string("time_limit: ") + bad + "\n");
    EXPECT_NE(message.find("key 'time_limit' at job.yaml:4: expected a duration such as 90m, 2h, 1h30m or seconds"),
              std::string::npos)
        << bad << ": " << message;
  }
  EXPECT_NE(Error("time_limit: 0\n").find("got '0'"), std::string::npos);
  EXPECT_NE(Error("", {"scheduling.time_limit=soon"})
                .find("key 'scheduling.time_limit' in override "
                      "'scheduling.time_limit=soon'"),
            std::string::npos);
}

TEST(JobSpecSharingKeys, DurationsFormatToTheirCanonicalSpelling) {
  EXPECT_EQ(FormatDuration(5400), "1h30m");
  EXPECT_EQ(FormatDuration(7200), "2h");
  EXPECT_EQ(FormatDuration(45), "45s");
  EXPECT_EQ(FormatDuration(90061), "1d1h1m1s");
  for (int64_t seconds : {1LL, 59LL, 60LL, 3599LL, 86400LL, 31536000LL}) {
    int64_t back = 0;
    EXPECT_TRUE(DecodeDuration(YAML::Node(FormatDuration(seconds)), &back)) << seconds;
    EXPECT_EQ(back, seconds);
  }
}

TEST(JobSpecSharingKeys, NodeSelectorAcceptsAMappingOrKeyValueText) {
  auto map = Parse("scheduling:\n  node_selector: {gpu: h100, zone: \"eu-1\"}\n");
  ASSERT_TRUE(map.ok()) << map.status().ToString();
  const std::map<std::string, std::string> expected = {{"gpu", "h100"}, {"zone", "eu-1"}};
  EXPECT_EQ(map->scheduling.node_selector, expected);
  auto text = Parse("", {"node_selector=gpu=h100,zone=eu-1"});
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(text->scheduling.node_selector, expected);
  auto empty = Parse("node_selector: {}\n");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->scheduling.node_selector.empty());
}

TEST(JobSpecSharingKeys, BadNodeSelectorsNameTheKeyAndTheLabel) {
  EXPECT_NE(Error("node_selector: {\"a=b\": c}\n")
                .find("key 'node_selector' at job.yaml:4: expected a mapping of "
                      "node label to value"),
            std::string::npos);
  EXPECT_NE(Error("node_selector: {\"a=b\": c}\n").find("label key 'a=b' contains '='"), std::string::npos);
  EXPECT_NE(Error("node_selector: {\"\": c}\n").find("a label key is empty"), std::string::npos);
  EXPECT_NE(Error("node_selector: {gpu: " + std::string(300, 'x') + "}\n")
                .find("the value of label 'gpu' is 300 bytes (at most 256)"),
            std::string::npos);
  EXPECT_NE(Error("node_selector: {gpu: [a, b]}\n").find("expected text keys and values"), std::string::npos);
  EXPECT_NE(Error("", {"node_selector=gpu"}).find("'gpu' is not key=value"), std::string::npos);
  EXPECT_NE(Error("", {"node_selector=gpu=a,gpu=b"}).find("label 'gpu' given twice"), std::string::npos);
  std::string many = "node_selector: {";
  for (int i = 0; i < 65; ++i) many.append("k").append(std::to_string(i)).append(": v, ");
  many += "}\n";
  EXPECT_NE(Error(many).find("65 labels (at most 64)"), std::string::npos);
}

TEST(JobSpecSharingKeys, MaxPreemptionsIsANonNegativeInteger) {
  auto zero = Parse("max_preemptions: 0\n");
  ASSERT_TRUE(zero.ok()) << zero.status().ToString();
  EXPECT_EQ(zero->scheduling.max_preemptions, 0);
  EXPECT_NE(Error("max_preemptions: -1\n")
                .find("key 'max_preemptions' at job.yaml:4: expected an integer >= 0, got "
                      "'-1'"),
            std::string::npos);
}

TEST(JobSpecSharingKeys, TheKeysRoundTripThroughToYaml) {
  auto spec = Parse(
      "scheduling:\n  time_limit: 90m\n  node_selector: {gpu: \"h100\", \"odd key\": \"no\"}\n"
      "  max_preemptions: 0\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  const std::string yaml = ToYaml(*spec);
  EXPECT_NE(yaml.find("time_limit: 1h30m"), std::string::npos) << yaml;
  auto back = ParseJobSpec(yaml, "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << yaml;
  EXPECT_EQ(*back, *spec) << yaml;
  EXPECT_EQ(back->scheduling.node_selector.at("odd key"), "no");

  auto defaults = Parse("");
  ASSERT_TRUE(defaults.ok());
  auto again = ParseJobSpec(ToYaml(*defaults), "emitted.yaml");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *defaults);
}

}  // namespace
}  // namespace anneal::jobspec
