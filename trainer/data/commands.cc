#include "trainer/data/commands.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "trainer/data/chat_template.h"
#include "trainer/data/clean.h"
#include "trainer/data/clean_job.h"
#include "trainer/data/dataset.h"
#include "trainer/data/sft.h"
#include "trainer/data/split.h"
#include "trainer/data/tokenizer.h"
#include "trainer/data/preview.h"
#include "trainer/data/prepare_command.h"
#include "trainer/data/stream.h"

namespace anneal::data {
namespace {

using nlohmann::json;

[[noreturn]] void Fail(const Status& s) {
  std::cerr << "error: " << s.message() << "\n";
  std::exit(2);
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) Fail(NotFoundError("cannot open " + path));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::shared_ptr<Tokenizer> LoadTokenizer(const std::string& dir) {
  auto tok = Tokenizer::Load(dir);
  if (!tok.ok()) Fail(tok.status());
  return *tok;
}

struct TokenizeArgs {
  std::string tokenizer, text, file, jsonl;
  bool json_out = false, add_special = false;
};

void RunTokenize(const TokenizeArgs& a) {
  auto tok = LoadTokenizer(a.tokenizer);
  if (!a.jsonl.empty()) {
    std::ifstream in(a.jsonl);
    if (!in) Fail(NotFoundError("cannot open " + a.jsonl));
    std::vector<std::string> texts;
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded()) Fail(InvalidArgumentError(fmt::format("{}:{}: not JSON", a.jsonl, n)));
      texts.push_back(j.contains("hex") ? FromHex(j["hex"].get<std::string>()) : j.value("text", std::string()));
    }
    auto ids = tok->EncodeBatch(texts, 0, a.add_special);
    if (!ids.ok()) Fail(ids.status());
    for (const auto& v : *ids) {
      json o = {{"ids", v}, {"decoded", tok->Decode(v)}};
      std::cout << o.dump(-1, ' ', true, json::error_handler_t::replace) << "\n";
    }
    return;
  }
  if (a.text.empty() == a.file.empty()) Fail(InvalidArgumentError("tokenize: give exactly one of --text or --file"));
  std::string text = a.file.empty() ? a.text : ReadAll(a.file);
  auto ids = tok->Encode(text, a.add_special);
  if (!ids.ok()) Fail(ids.status());
  if (a.json_out) {
    std::cout << json{{"ids", *ids}}.dump() << "\n";
  } else {
    std::cout << fmt::format("{}", fmt::join(*ids, " ")) << "\n";
  }
}

struct EncodeArgs {
  std::string tokenizer, template_name, jsonl;
  SftOptions options;
  bool pack = false;
};

StatusOr<Role> ParseRole(const std::string& r) {
  if (r == "user") return Role::kUser;
  if (r == "assistant") return Role::kAssistant;
  if (r == "observation") return Role::kObservation;
  if (r == "function") return Role::kFunction;
  if (r == "system") return Role::kSystem;
  return InvalidArgumentError("unknown role '" + r + "'");
}

void RunEncode(const EncodeArgs& a) {
  auto tok = LoadTokenizer(a.tokenizer);
  auto t = GetChatTemplate(a.template_name);
  if (!t.ok()) Fail(t.status());
  Status fix = FixTokenizerForTemplate(*t, tok.get());
  if (!fix.ok()) Fail(fix);
  std::ifstream in(a.jsonl);
  if (!in) Fail(NotFoundError("cannot open " + a.jsonl));
  std::string line;
  std::vector<SftExample> examples;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("messages")) Fail(InvalidArgumentError(fmt::format("{}:{}: bad line", a.jsonl, n)));
    std::vector<Message> messages;
    for (const json& m : j["messages"]) {
      auto role = ParseRole(m.value("role", std::string()));
      if (!role.ok()) Fail(role.status().WithContext(fmt::format("{}:{}", a.jsonl, n)));
      messages.push_back({*role, m.value("content", std::string())});
    }
    SftOptions o = a.options;  // a line may override the options (batching many option sets in one run)
    o.cutoff_len = j.value("cutoff_len", o.cutoff_len);
    o.train_on_prompt = j.value("train_on_prompt", o.train_on_prompt);
    o.mask_history = j.value("mask_history", o.mask_history);
    auto ex = EncodeSupervised(*t, *tok, messages, j.value("system", std::string()), o);
    if (!ex.ok()) Fail(ex.status().WithContext(fmt::format("{}:{}", a.jsonl, n)));
    if (a.pack) examples.push_back(std::move(*ex));
    else std::cout << json{{"input_ids", ex->input_ids}, {"labels", ex->labels}}.dump() << "\n";
  }
  if (!a.pack) return;
  for (const PackedSequence& p : PackExamples(examples, a.options.cutoff_len, tok->pad_id().value_or(0)))
    std::cout << json{{"input_ids", p.input_ids}, {"labels", p.labels}, {"position_ids", p.position_ids},
                      {"segment_ids", p.segment_ids}}.dump() << "\n";
}

struct LoadArgs {
  std::vector<std::string> datasets;
  std::string dataset_dir = "data", interleave_probs;
  LoadOptions options;
  int64_t max_samples = -1;
  bool stream = false;
};

// `data load`: the conversations a job's datasets become (after num_samples, max_samples and mixing), one
// JSON object per line; the format and mixing parity tests compare them with HF datasets / LLaMA-Factory.
void PrintConversation(const Conversation& c);

void RunLoad(LoadArgs a) {
  if (a.max_samples >= 0) a.options.max_samples = a.max_samples;
  std::stringstream probs(a.interleave_probs);
  for (std::string p; std::getline(probs, p, ',');) {
    try {
      a.options.interleave_probs.push_back(std::stod(p));
    } catch (const std::exception&) {
      Fail(InvalidArgumentError("--interleave-probs: '" + p + "' is not a number"));
    }
  }
  LoadReport report;
  std::vector<Conversation> rows;
  size_t printed = 0;
  auto print = [&] {
    for (const Conversation& c : rows) PrintConversation(c);
    printed += rows.size();
    rows.clear();
  };
  auto attrs = a.datasets.empty() ? StatusOr<std::vector<DatasetAttr>>(InvalidArgumentError("no dataset given (data.dataset is empty)"))
                                  : ResolveDatasets(a.datasets, a.dataset_dir);
  if (!attrs.ok()) Fail(attrs.status());
  std::string why;
  if (a.stream && CanStream(*attrs, &why)) {
    // Bounded memory (stream.h): the same rows, a batch at a time.
    auto stream = ConversationStream::Open(*attrs, a.options, &report);
    if (!stream.ok()) Fail(stream.status());
    for (bool more = true; more;) {
      auto next = (*stream)->Next(1024, &rows);
      if (!next.ok()) Fail(next.status());
      more = *next;
      print();
    }
  } else {
    if (a.stream) std::cerr << "not streamed: " << why << "\n";
    auto all = LoadAndMixDatasets(*attrs, a.options, &report);
    if (!all.ok()) Fail(all.status());
    rows = std::move(*all);
    print();
  }
  std::cerr << fmt::format("{} rows read, {} skipped, {} conversations\n", report.rows, report.skipped, printed);
}

void PrintConversation(const Conversation& c) {
  json o = {{"origin", c.origin}};
  if (c.pretokenized) {
    o["input_ids"] = c.input_ids;
    o["labels"] = c.labels;
  } else {
    json msgs = json::array();
    for (const Message& m : c.messages) msgs.push_back(json{{"role", std::string(RoleName(m.role))}, {"content", m.content}});
    o["messages"] = std::move(msgs);
    o["system"] = c.system;
  }
  std::cout << o.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
}

struct CleanArgs {
  LoadArgs load;
  std::string out, report;
  CleanOptions clean;
};

// `data clean`: load (as `data load`), clean (clean.h), write the kept conversations as JSON lines that load
// back as sharegpt messages (a system prompt is the leading system turn) and a JSON report of the drops.
void RunClean(const CleanArgs& a) {
  LoadOptions lo = a.load.options;
  if (a.load.max_samples >= 0) lo.max_samples = a.load.max_samples;
  LoadReport load_report;
  auto rows = LoadDatasets(a.load.datasets, a.load.dataset_dir, lo, &load_report);
  if (!rows.ok()) Fail(rows.status());
  auto result = CleanConversations(*rows, a.clean);
  if (!result.ok()) Fail(result.status());
  std::ofstream out(a.out, std::ios::binary);
  if (!out) Fail(InvalidArgumentError("cannot write --out " + a.out));
  for (const Conversation& c : result->kept)
    out << ConversationJson(c).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  const json report = CleanReportJson(rows->size(), load_report.skipped, *result);
  if (!a.report.empty()) {
    std::ofstream rep(a.report, std::ios::binary);
    if (!rep) Fail(InvalidArgumentError("cannot write --report " + a.report));
    rep << report.dump(1) << "\n";
  }
  const std::string summary = CleanSummary(rows->size(), *result);
  std::cerr << summary << "\n";
}

struct SplitArgs {
  LoadArgs load;
  std::string ratios = "8:1:1", out_dir, name = "split";
  uint64_t seed = 42;
};

// `data split`: load (as `data load`), split (split.h), write <name>_train/_val/_test.jsonl into --out-dir as
// `data clean` writes conversations, and a dataset_info.json there naming them (sharegpt messages), so a job
// uses them as `dataset: <name>_train` and `eval_dataset: <name>_val` with `dataset_dir: <out-dir>`.
void RunSplit(const SplitArgs& a) {
  auto ratios = ParseSplitRatios(a.ratios);
  if (!ratios.ok()) Fail(ratios.status());
  LoadOptions lo = a.load.options;
  if (a.load.max_samples >= 0) lo.max_samples = a.load.max_samples;
  auto rows = LoadDatasets(a.load.datasets, a.load.dataset_dir, lo, nullptr);
  if (!rows.ok()) Fail(rows.status());
  auto split = SplitRows(static_cast<int64_t>(rows->size()), *ratios, a.seed);
  if (!split.ok()) Fail(split.status().WithContext(fmt::format("{} row(s) of {}", rows->size(), fmt::join(a.load.datasets, ","))));
  std::error_code ec;
  std::filesystem::create_directories(a.out_dir, ec);
  if (ec) Fail(InvalidArgumentError(fmt::format("cannot create --out-dir {}: {}", a.out_dir, ec.message())));
  json info = json::object();
  std::string summary = fmt::format("{} rows split {} (seed {}):", rows->size(), a.ratios, a.seed);
  for (const auto& [part, indices] : {std::pair{"train", &split->train}, std::pair{"val", &split->val},
                                      std::pair{"test", &split->test}}) {
    if (indices->empty()) continue;
    const std::string file = fmt::format("{}_{}.jsonl", a.name, part);
    std::ofstream out(a.out_dir + "/" + file, std::ios::binary);
    if (!out) Fail(InvalidArgumentError("cannot write " + a.out_dir + "/" + file));
    for (int64_t i : *indices) {
      out << ConversationJson((*rows)[static_cast<size_t>(i)]).dump(-1, ' ', false, json::error_handler_t::replace)
          << "\n";
    }
    if (!out.flush()) Fail(InternalError("writing " + a.out_dir + "/" + file + " failed"));
    const bool tokenized = !rows->empty() && rows->front().pretokenized;
    info[fmt::format("{}_{}", a.name, part)] = ConversationsDatasetInfo(file, tokenized);
    summary += fmt::format(" {} {}", indices->size(), part);
  }
  std::ofstream info_out(a.out_dir + "/dataset_info.json", std::ios::binary);
  if (!info_out || !(info_out << info.dump(2) << "\n")) Fail(InternalError("cannot write " + a.out_dir + "/dataset_info.json"));
  std::cerr << summary << "\n";
}

}  // namespace

void AddDataCommands(CLI::App& app) {
  AddCleanJobCommand(app);  // `clean --config`: the job kind clean (clean_job.h)
  auto targs = std::make_shared<TokenizeArgs>();
  CLI::App* tokenize = app.add_subcommand("tokenize", "Tokenize text with a tokenizer.json (HF-identical ids)");
  tokenize->add_option("--tokenizer", targs->tokenizer, "Directory with tokenizer.json (or the file)")->required();
  auto* text_opt = tokenize->add_option("--text", targs->text, "Text to tokenize");
  auto* file_opt = tokenize->add_option("--file", targs->file, "File whose bytes are tokenized");
  text_opt->excludes(file_opt);
  tokenize->add_option("--jsonl", targs->jsonl, "Batch: one {\"text\"} or {\"hex\"} object per line");
  tokenize->add_flag("--json", targs->json_out, "Print {\"ids\": [...]}");
  tokenize->add_flag("--add-special-tokens", targs->add_special, "Run the post-processor (e.g. BOS)");
  tokenize->callback([targs] { RunTokenize(*targs); });

  CLI::App* data = app.add_subcommand("data", "Inspect training data");
  data->require_subcommand(1);
  auto pargs = std::make_shared<PreviewArgs>();
  CLI::App* preview = data->add_subcommand("preview", "Render examples of a job's datasets with their label masks");
  preview->add_option("--config", pargs->config, "Job YAML")->required();
  preview->add_option("--num", pargs->num, "How many examples")->default_val(3);
  preview->callback([pargs] {
    Status s = RunPreview(*pargs, std::cout);
    if (!s.ok()) Fail(s);
  });

  auto largs = std::make_shared<LoadArgs>();
  CLI::App* load = data->add_subcommand("load", "Print the conversations datasets load to (JSON lines)");
  load->add_option("--dataset", largs->datasets, "dataset_info.json names or file/directory paths")
      ->required()
      ->delimiter(',');
  load->add_option("--dataset-dir", largs->dataset_dir, "Directory holding dataset_info.json")->default_val("data");
  load->add_option("--max-samples", largs->max_samples, "Keep the first N rows of each dataset");
  load->add_option("--mix-strategy", largs->options.mix_strategy, "concat, interleave_under, interleave_over, "
                                                                   "interleave_once")
      ->default_val("concat");
  load->add_option("--interleave-probs", largs->interleave_probs, "Comma-separated probabilities, one per dataset");
  load->add_option("--seed", largs->options.seed, "Seed of num_samples and interleave_probs")->default_val(42);
  load->add_flag("--skip-bad-rows", largs->options.skip_bad_rows, "Skip malformed rows (counted)");
  load->add_flag("--pretrain", largs->options.response_optional, "Stage pt: alpaca rows may lack a response");
  load->add_flag("--stream", largs->stream,
                 "Read a batch at a time (bounded memory) where the datasets allow it (no split slice, no num_samples)");
  load->callback([largs] { RunLoad(*largs); });
  AddPrepareCommand(*data);

  auto cargs = std::make_shared<CleanArgs>();
  CLI::App* clean = data->add_subcommand("clean", "Normalize, strip markup, filter by length, dedup (exact and MinHash-LSH)");
  clean->add_option("--dataset", cargs->load.datasets, "dataset_info.json names or file/directory paths")
      ->required()
      ->delimiter(',');
  clean->add_option("--dataset-dir", cargs->load.dataset_dir, "Directory holding dataset_info.json")->default_val("data");
  clean->add_option("--out", cargs->out, "Cleaned conversations (JSON lines, sharegpt messages)")->required();
  clean->add_option("--report", cargs->report, "JSON report: counts by reason and every dropped row");
  clean->add_option("--normalize", cargs->clean.normalize, "NFC, NFKC, NFD, NFKD or none")->default_val("NFC");
  clean->add_flag("--strip-markup", cargs->clean.strip_markup, "Remove HTML/XML tags, decode entities");
  clean->add_option("--min-chars", cargs->clean.min_chars, "Drop conversations shorter than this (code points)");
  clean->add_option("--max-chars", cargs->clean.max_chars, "Drop conversations longer than this (code points)");
  clean->add_flag("!--no-exact-dedup", cargs->clean.exact_dedup, "Keep exact duplicates");
  clean->add_flag("--near-dedup", cargs->clean.near_dedup, "Drop near-duplicates (MinHash-LSH)");
  clean->add_option("--jaccard", cargs->clean.jaccard_threshold, "Near-dup Jaccard threshold")->default_val(0.8);
  clean->add_option("--num-perm", cargs->clean.num_perm, "MinHash permutations")->default_val(128);
  clean->add_option("--shingle", cargs->clean.shingle, "Character shingle length (code points)")->default_val(5);
  clean->add_option("--minhash-seed", cargs->clean.seed, "MinHash seed (datasketch's)")->default_val(1);
  clean->add_option("--max-samples", cargs->load.max_samples, "Keep the first N rows of each dataset");
  clean->add_flag("--skip-bad-rows", cargs->load.options.skip_bad_rows, "Skip malformed rows (counted)");
  clean->add_option("--mask-pii", cargs->clean.mask_pii, "Mask e-mails, phone numbers, ID numbers: email,phone,id")
      ->delimiter(',');
  clean->add_option("--scripts", cargs->clean.scripts,
                    "Keep conversations written in these scripts (Latin,Han,...; zh, ja, ko, ru, ar, ...)")
      ->delimiter(',');
  clean->add_option("--script-fraction", cargs->clean.script_fraction, "Share of letters in --scripts to keep a row")
      ->default_val(0.5);
  clean->add_option("--languages", cargs->clean.languages,
                    "Keep conversations in these languages (CLD2 statistical detection): en,zh,fr,...")
      ->delimiter(',');
  clean->add_option("--language-confidence", cargs->clean.language_confidence,
                    "Share of the text in --languages to keep a row (0..1]")
      ->default_val(0.5);
  clean->callback([cargs] { RunClean(*cargs); });

  auto sargs = std::make_shared<SplitArgs>();
  CLI::App* split = data->add_subcommand("split", "Split datasets into train/val/test files (as HF datasets splits)");
  split->add_option("--dataset", sargs->load.datasets, "dataset_info.json names or file/directory paths")
      ->required()
      ->delimiter(',');
  split->add_option("--dataset-dir", sargs->load.dataset_dir, "Directory holding dataset_info.json")->default_val("data");
  split->add_option("--ratios", sargs->ratios, "train:val:test (or train:val)")->default_val("8:1:1");
  split->add_option("--seed", sargs->seed, "Seed of the shuffle (np.random.default_rng, as HF datasets)")
      ->default_val(42);
  split->add_option("--out-dir", sargs->out_dir, "Where the split files and their dataset_info.json go")->required();
  split->add_option("--name", sargs->name, "Dataset name prefix: <name>_train, <name>_val, <name>_test")
      ->default_val("split");
  split->add_option("--max-samples", sargs->load.max_samples, "Keep the first N rows of each dataset");
  split->add_flag("--skip-bad-rows", sargs->load.options.skip_bad_rows, "Skip malformed rows");
  split->callback([sargs] { RunSplit(*sargs); });

  auto eargs = std::make_shared<EncodeArgs>();
  CLI::App* encode = data->add_subcommand("encode", "Encode conversations with a chat template (ids and labels)");
  encode->add_option("--tokenizer", eargs->tokenizer, "Directory with tokenizer.json")->required();
  encode->add_option("--template", eargs->template_name, "Chat template name")->required();
  encode->add_option("--jsonl", eargs->jsonl, "One {\"messages\": [...], \"system\": s} per line")->required();
  encode->add_option("--cutoff-len", eargs->options.cutoff_len, "Truncation length")->default_val(2048);
  encode->add_flag("--train-on-prompt", eargs->options.train_on_prompt, "Compute loss on prompts too");
  encode->add_flag("--mask-history", eargs->options.mask_history, "Train on the last turn only");
  encode->add_flag("--pack", eargs->pack, "Pack the encoded examples (greedy knapsack, neat-packing ids)");
  encode->callback([eargs] { RunEncode(*eargs); });
}

}  // namespace anneal::data
