// bench_data_tokenize: encode throughput of anneal's Tokenizer::EncodeBatch on a JSONL corpus.
// Prints one JSON line {"threads", "bytes", "tokens", "seconds", "mb_per_s"} (best of --repeats runs after a
// warm-up run, as HF's numbers are taken by tokenize_bench.py). Driven by tokenize_bench.py, which runs HF
// tokenizers on the same corpus and thread count and prints the comparison table.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "trainer/data/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"bench_data_tokenize"};
  std::string tokenizer, corpus;
  int threads = 1, repeats = 3;
  app.add_option("--tokenizer", tokenizer)->required();
  app.add_option("--corpus", corpus, "JSONL of {\"text\": ...}")->required();
  app.add_option("--threads", threads);
  app.add_option("--repeats", repeats);
  CLI11_PARSE(app, argc, argv);
  auto tok = anneal::data::Tokenizer::Load(tokenizer);
  if (!tok.ok()) { std::cerr << tok.status().message() << "\n"; return 2; }
  std::ifstream in(corpus);
  std::vector<std::string> texts;
  size_t bytes = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    texts.push_back(nlohmann::json::parse(line).value("text", std::string()));
    bytes += texts.back().size();
  }
  double best = 1e30;
  size_t tokens = 0;
  for (int r = 0; r <= repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    auto ids = (*tok)->EncodeBatch(texts, threads);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!ids.ok()) { std::cerr << ids.status().message() << "\n"; return 2; }
    tokens = 0;
    for (const auto& v : *ids) tokens += v.size();
    if (r > 0) best = std::min(best, s);  // run 0 warms the word caches, as HF's first call does
  }
  nlohmann::json out = {{"threads", threads}, {"bytes", bytes}, {"tokens", tokens}, {"seconds", best},
                        {"mb_per_s", bytes / 1e6 / best}};
  std::cout << out.dump() << "\n";
  return 0;
}
