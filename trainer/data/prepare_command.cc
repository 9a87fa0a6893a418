#include "trainer/data/prepare_command.h"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "trainer/data/pipeline.h"

namespace anneal::data {
namespace {

struct PrepareArgs {
  DataConfig config;
  std::string stage = "sft", interleave_probs;
  int64_t max_samples = -1;
  bool in_memory = false;
};

// VmHWM (peak resident set) of this process in KiB, or -1 where /proc is absent.
int64_t PeakRssKib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

void RunPrepare(PrepareArgs a) {
  auto fail = [](const Status& s) {
    std::cerr << "error: " << s.message() << "\n";
    std::exit(2);
  };
  DataConfig& c = a.config;
  if (a.stage != "sft" && a.stage != "dpo" && a.stage != "pt")
    fail(InvalidArgumentError("--stage: sft, pt or dpo, got " + a.stage));
  c.pairwise = a.stage == "dpo";
  c.pretrain = a.stage == "pt";
  c.bounded_memory = !a.in_memory;
  if (a.max_samples >= 0) c.max_samples = a.max_samples;
  std::stringstream probs(a.interleave_probs);
  for (std::string p; std::getline(probs, p, ',');) {
    try {
      c.interleave_probs.push_back(std::stod(p));
    } catch (const std::exception&) {
      fail(InvalidArgumentError("--interleave-probs: '" + p + "' is not a number"));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  auto d = PrepareSftData(c);
  if (!d.ok()) fail(d.status());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json out = {{"cache", d->cache->path()},    {"key", d->cache_key},
                        {"examples", d->cache->size()}, {"tokens", d->cache->num_tokens()},
                        {"streamed", d->streamed},      {"built", d->cache->built_here()},
                        {"rows", d->report.rows},       {"skipped", d->report.skipped},
                        {"seconds", seconds},           {"peak_rss_kib", PeakRssKib()}};
  std::cout << out.dump() << "\n";
}

}  // namespace

void AddPrepareCommand(CLI::App& data) {
  auto args = std::make_shared<PrepareArgs>();
  DataConfig& c = args->config;
  CLI::App* p = data.add_subcommand("prepare", "Build the tokenized cache of datasets as the trainer does");
  p->add_option("--tokenizer", c.tokenizer_dir, "Directory with tokenizer.json")->required();
  p->add_option("--template", c.template_name, "Chat template name")->required();
  p->add_option("--dataset", c.datasets, "dataset_info.json names or file/directory paths")->required()->delimiter(',');
  p->add_option("--dataset-dir", c.dataset_dir, "Directory holding dataset_info.json")->default_val("data");
  p->add_option("--cache-dir", c.cache_dir, "Where the tokenized cache goes")->required();
  p->add_option("--stage", args->stage, "sft, pt (raw text) or dpo (ranking datasets)")->default_val("sft");
  p->add_flag("!--no-packing", c.pretrain_packing, "Stage pt: one cut text per row instead of packed blocks");
  p->add_option("--preprocessing-batch-size", c.preprocessing_batch_size, "Stage pt: rows per packing group")
      ->default_val(1000);
  p->add_option("--preprocessing-num-workers", c.preprocessing_num_workers, "Stage pt: contiguous shards")
      ->default_val(1);
  p->add_option("--cutoff-len", c.sft.cutoff_len, "Truncation length")->default_val(2048);
  p->add_option("--max-samples", args->max_samples, "Keep the first N rows of each dataset");
  p->add_option("--mix-strategy", c.mix_strategy, "concat, interleave_under, interleave_over, interleave_once")
      ->default_val("concat");
  p->add_option("--interleave-probs", args->interleave_probs, "Comma-separated probabilities, one per dataset");
  p->add_option("--seed", c.seed, "Seed of num_samples and interleave_probs")->default_val(42);
  p->add_flag("--skip-bad-rows", c.skip_bad_rows, "Skip malformed rows (counted)");
  p->add_option("--threads", c.threads, "Encoding threads (0: all cores)")->default_val(0);
  p->add_option("--chunk-rows", c.stream_chunk_rows, "Conversations per bounded-memory chunk")->default_val(4096);
  p->add_flag("--in-memory", args->in_memory, "Load every row before encoding (the reference path)");
  p->callback([args] { RunPrepare(*args); });
}

}  // namespace anneal::data
