// kind: clean, `data clean` as a job: its `clean` keys, their defaults and refusals (jobspec.h CleanSpec).
#include <gtest/gtest.h>

#include <string>

#include "jobspec/jobspec.h"
#include "jobspec/language_codes.h"
#include "jobspec/pipeline.h"

namespace anneal::jobspec {
namespace {

constexpr const char* kClean = "kind: clean\ndataset: raw\ndataset_dir: /data/raw\noutput_dir: /o/clean\n";

void ExpectRefused(const std::string& text, const std::vector<std::string>& parts) {
  auto spec = ParseJobSpec(text, "job.yaml");
  ASSERT_FALSE(spec.ok()) << text;
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  for (const auto& part : parts)
    EXPECT_NE(spec.status().message().find(part), std::string::npos) << spec.status().message();
}

TEST(CleanKeys, EveryKeyIsReadAndTheSpecRoundTrips) {
  auto spec = ParseJobSpec(std::string(kClean) + R"(clean:
  dataset_name: support_clean
  normalize: NFKC
  strip_markup: true
  mask_pii: email,phone
  scripts: [Latin, Han]
  script_fraction: 0.7
  languages: [en, zh]
  language_confidence: 0.6
  min_chars: 10
  max_chars: 5000
  exact_dedup: false
  near_dedup: true
  jaccard_threshold: 0.7
  num_perm: 64
  shingle: 3
  minhash_seed: 7
)",
                           "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kClean);
  EXPECT_EQ(JobKindName(spec->kind), "clean");
  const CleanSpec& c = spec->clean;
  EXPECT_EQ(c.dataset_name, "support_clean");
  EXPECT_EQ(c.normalize, "NFKC");
  EXPECT_TRUE(c.strip_markup);
  EXPECT_EQ(c.mask_pii, (std::vector<std::string>{"email", "phone"}));
  EXPECT_EQ(c.scripts, (std::vector<std::string>{"Latin", "Han"}));
  EXPECT_DOUBLE_EQ(c.script_fraction, 0.7);
  EXPECT_EQ(c.languages, (std::vector<std::string>{"en", "zh"}));
  EXPECT_DOUBLE_EQ(c.language_confidence, 0.6);
  EXPECT_EQ(c.min_chars, 10);
  EXPECT_EQ(c.max_chars, 5000);
  EXPECT_FALSE(c.exact_dedup);
  EXPECT_TRUE(c.near_dedup);
  EXPECT_DOUBLE_EQ(c.jaccard_threshold, 0.7);
  EXPECT_EQ(c.num_perm, 64);
  EXPECT_EQ(c.shingle, 3);
  EXPECT_EQ(c.minhash_seed, 7);
  EXPECT_EQ(spec->data.dataset, std::vector<std::string>{"raw"});
  EXPECT_EQ(spec->train.output_dir, "/o/clean");
  // No model: ToYaml writes no model section, and the text parses back to the same spec.
  const std::string yaml = ToYaml(*spec);
  EXPECT_EQ(yaml.find("model_name_or_path"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("clean:"), std::string::npos) << yaml;
  auto again = ParseJobSpec(yaml, "round-trip");
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << yaml;
  JobSpec expected = *spec;
  expected.warnings.clear();
  again->warnings.clear();
  EXPECT_EQ(*again, expected);
}

TEST(CleanKeys, DefaultsAreDataCleansAndOtherKindsWriteNoCleanSection) {
  auto spec = ParseJobSpec(kClean, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->clean, CleanSpec{});
  EXPECT_EQ(spec->clean.dataset_name, "cleaned");
  EXPECT_TRUE(spec->clean.exact_dedup);
  auto train = ParseJobSpec("model_name_or_path: /m\ndataset: d\noutput_dir: /o\n", "job.yaml");
  ASSERT_TRUE(train.ok());
  EXPECT_EQ(ToYaml(*train).find("clean:"), std::string::npos);
}

TEST(CleanKeys, BadValuesAreRefusedNamingTheKey) {
  ExpectRefused(std::string(kClean) + "clean: {normalize: NFX}\n", {"clean.normalize", "NFKC"});
  ExpectRefused(std::string(kClean) + "clean: {mask_pii: [email, address]}\n",
                {"clean.mask_pii", "email, phone, id", "'address' is not one of them"});
  ExpectRefused(std::string(kClean) + "clean: {jaccard_threshold: 1}\n", {"clean.jaccard_threshold", "(0, 1)"});
  ExpectRefused(std::string(kClean) + "clean: {script_fraction: 0}\n", {"clean.script_fraction"});
  ExpectRefused(std::string(kClean) + "clean: {language_confidence: 1.5}\n", {"clean.language_confidence"});
  ExpectRefused(std::string(kClean) + "clean: {num_perm: 1}\n", {"clean.num_perm"});
  ExpectRefused(std::string(kClean) + "clean: {min_chars: -1}\n", {"clean.min_chars"});
  ExpectRefused(std::string(kClean) + "clean: {minhash_seed: 4294967296}\n", {"clean.minhash_seed"});
  ExpectRefused(std::string(kClean) + "clean: {dataset_name: a/b}\n", {"clean.dataset_name", "not a path"});
}

TEST(CleanKeys, UnknownLanguageCodeIsRefusedByName) {
  ExpectRefused(std::string(kClean) + "clean:\n  languages: [en, xx]\n",
                {"'clean.languages' at job.yaml:6", "unknown language 'xx'"});
  ExpectRefused(std::string(kClean) + "clean:\n  languages: klingon\n", {"unknown language 'klingon'"});
  EXPECT_TRUE(IsKnownLanguageCode("en"));
  EXPECT_TRUE(IsKnownLanguageCode("ZH"));
  EXPECT_TRUE(IsKnownLanguageCode("zh-Hant"));
  EXPECT_TRUE(IsKnownLanguageCode("un"));
  EXPECT_FALSE(IsKnownLanguageCode("xx"));
  EXPECT_FALSE(IsKnownLanguageCode(""));
}

TEST(CleanKeys, UnknownCleanKeyIsRefusedWithASuggestion) {
  ExpectRefused(std::string(kClean) + "clean: {near_dedupe: true}\n", {"clean.near_dedupe", "near_dedup"});
  // A clean key has no flat spelling: at top level it is unknown.
  ExpectRefused(std::string(kClean) + "near_dedup: true\n", {"near_dedup"});
}

TEST(CleanKeys, CleanKeysInAnotherKindAreRefused) {
  ExpectRefused("model_name_or_path: /m\ndataset: d\noutput_dir: /o\nclean: {near_dedup: true}\n",
                {"'clean.near_dedup'", "clean keys belong to a clean job", "kind: train"});
}

TEST(CleanKeys, ACleanJobNeedsDataAnOutputAndOneProcess) {
  ExpectRefused("kind: clean\noutput_dir: /o\n", {"missing required key 'dataset'", "clean job"});
  ExpectRefused("kind: clean\ndataset: d\n", {"missing required key 'output_dir'", "cleaned dataset"});
  ExpectRefused(std::string(kClean) + "gpus_per_node: 2\n", {"a clean job runs one process"});
}

TEST(CleanKeys, ACleanStepFeedsATrainStepInAPipeline) {
  auto p = ParsePipeline(R"(steps:
  - name: clean
    job: {kind: clean, dataset: raw, dataset_dir: /data/raw, output_dir: /o/clean, clean: {near_dedup: true}}
  - name: train
    needs: [clean]
    job: {model_name_or_path: /m, dataset: cleaned, dataset_dir: "${steps.clean.output_dir}", output_dir: /o/t}
)",
                         "p.yaml");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->steps[0].kind, StepKind::kClean);
  EXPECT_EQ(StepKindName(p->steps[0].kind), "clean");
  auto explicit_kind =
      ParsePipeline("steps:\n  - {name: c, kind: clean, job: {kind: clean, dataset: d, output_dir: /o}}\n", "p.yaml");
  ASSERT_TRUE(explicit_kind.ok()) << explicit_kind.status().ToString();
  auto contradicting =
      ParsePipeline("steps:\n  - {name: c, kind: clean, job: {dataset: d, output_dir: /o}}\n", "p.yaml");
  ASSERT_FALSE(contradicting.ok());
  EXPECT_NE(contradicting.status().message().find("kind 'clean' contradicts the job spec's kind 'train'"),
            std::string::npos)
      << contradicting.status().message();
}

}  // namespace
}  // namespace anneal::jobspec
