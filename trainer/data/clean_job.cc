#include "trainer/data/clean_job.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace anneal::data {
namespace {

using json = nlohmann::json;

// Events on ANNEAL_EVENTS_FD (docs/trainer-contract.md): one line per event, written whole.
class Events {
 public:
  Events() {
    if (const char* v = std::getenv("ANNEAL_EVENTS_FD")) {
      char* end = nullptr;
      const long fd = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && fd >= 0 && ::fcntl(static_cast<int>(fd), F_GETFD) != -1)
        fd_ = static_cast<int>(fd);
    }
  }
  void Emit(const std::string& type, json fields) const {
    if (fd_ < 0) return;
    fields["type"] = type;
    fields["rank"] = 0;
    fields["time_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    const std::string line = fields.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      done += static_cast<size_t>(n);
    }
  }

 private:
  int fd_ = -1;
};

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out || !(out << text) || !out.flush()) return InternalError("cannot write " + path);
  return Status::Ok();
}

struct CleanJobArgs {
  std::string config;
  std::vector<std::string> overrides;
};

int RunCleanJobCommand(const CleanJobArgs& a) {
  const Events events;
  events.Emit("started", {{"world_size", 1}, {"pid", static_cast<int64_t>(::getpid())}});
  auto fail = [&](const Status& s, int code) {
    std::cerr << "error: " << s.message() << "\n";
    events.Emit("finished", {{"status", "error"}, {"message", s.message()}});
    return code;
  };
  auto spec = jobspec::LoadJobSpecFile(a.config, a.overrides);
  if (!spec.ok()) return fail(spec.status(), 2);
  for (const auto& w : spec->warnings) std::cerr << "warning: " << w << "\n";
  if (spec->kind != jobspec::JobKind::kClean) {
    return fail(InvalidArgumentError(fmt::format("{}: kind is '{}', this command runs 'clean' jobs", a.config,
                                                 jobspec::JobKindName(spec->kind))),
                2);
  }
  auto result = RunCleanJob(*spec);
  if (!result.ok()) return fail(result.status(), result.status().code() == StatusCode::kInvalidArgument ? 2 : 1);
  events.Emit("metrics", {{"step", 0}, {"total_steps", 0}, {"values", result->counts}});
  events.Emit("message", {{"level", "info"}, {"text", "clean: " + result->summary}});
  events.Emit("finished", {{"status", "ok"},
                           {"message", fmt::format("cleaned dataset '{}' written to {}: {}", spec->clean.dataset_name,
                                                   result->output_dir, result->summary)},
                           {"output", result->output_dir}});
  std::cerr << result->summary << "\n";
  std::cout << result->output_dir << "\n";
  return 0;
}

}  // namespace

CleanOptions CleanOptionsOf(const jobspec::CleanSpec& s) {
  CleanOptions o;
  o.normalize = s.normalize;
  o.strip_markup = s.strip_markup;
  o.mask_pii = s.mask_pii;
  o.scripts = s.scripts;
  o.script_fraction = s.script_fraction;
  o.languages = s.languages;
  o.language_confidence = s.language_confidence;
  o.min_chars = s.min_chars;
  o.max_chars = s.max_chars;
  o.exact_dedup = s.exact_dedup;
  o.near_dedup = s.near_dedup;
  o.jaccard_threshold = s.jaccard_threshold;
  o.num_perm = s.num_perm;
  o.shingle = s.shingle;
  o.seed = static_cast<uint32_t>(s.minhash_seed);
  return o;
}

json ConversationJson(const Conversation& c) {
  if (c.pretokenized) {
    json o = {{"input_ids", c.input_ids}};
    if (!c.labels.empty()) o["labels"] = c.labels;
    return o;
  }
  json msgs = json::array();
  if (!c.system.empty()) msgs.push_back(json{{"role", "system"}, {"content", c.system}});
  for (const Message& m : c.messages)
    msgs.push_back(json{{"role", std::string(RoleName(m.role))}, {"content", m.content}});
  return json{{"messages", std::move(msgs)}};
}

json ConversationsDatasetInfo(const std::string& file_name, bool tokenized) {
  if (tokenized) return json{{"file_name", file_name}, {"formatting", "tokenized"}};
  return json{{"file_name", file_name},
              {"formatting", "sharegpt"},
              {"columns", {{"messages", "messages"}}},
              {"tags",
               {{"role_tag", "role"},
                {"content_tag", "content"},
                {"user_tag", "user"},
                {"assistant_tag", "assistant"},
                {"observation_tag", "observation"},
                {"function_tag", "function_call"},
                {"system_tag", "system"}}}};
}

json CleanReportJson(size_t rows, int64_t skipped_bad_rows, const CleanResult& result) {
  json dropped = json::array();
  for (const DroppedRow& d : result.dropped) {
    json row = {{"origin", d.origin}, {"reason", d.reason}};
    if (!d.duplicate_of.empty()) row["duplicate_of"] = d.duplicate_of;
    if (!d.language.empty()) {
      row["language"] = d.language;
      row["language_confidence"] = d.language_confidence;
    }
    dropped.push_back(std::move(row));
  }
  return json{{"rows", rows},
              {"skipped_bad_rows", skipped_bad_rows},
              {"kept", result.kept.size()},
              {"dropped", result.dropped_by_reason},
              {"dropped_by_language", result.dropped_by_language},
              {"pii_masked", result.pii_masked},
              {"lsh", {{"bands", result.lsh_bands}, {"rows", result.lsh_rows}}},
              {"dropped_rows", std::move(dropped)}};
}

std::string CleanSummary(size_t rows, const CleanResult& result) {
  std::string summary = fmt::format("{} rows, {} kept, {} dropped", rows, result.kept.size(), result.dropped.size());
  for (const auto& [reason, n] : result.dropped_by_reason) summary += fmt::format(", {} {}", n, reason);
  for (const auto& [language, n] : result.dropped_by_language) summary += fmt::format(" ({} {})", n, language);
  for (const auto& [kind, n] : result.pii_masked) summary += fmt::format("; {} {} masked", n, kind);
  return summary;
}

StatusOr<CleanJobResult> RunCleanJob(const jobspec::JobSpec& spec) {
  LoadOptions lo;
  lo.max_samples = spec.data.max_samples;
  lo.skip_bad_rows = spec.data.skip_bad_rows;
  lo.mix_strategy = spec.data.mix_strategy;
  lo.interleave_probs = spec.data.interleave_probs;
  lo.seed = static_cast<uint64_t>(spec.train.seed);
  LoadReport load_report;
  ASSIGN_OR_RETURN(std::vector<Conversation> rows,
                   LoadDatasets(spec.data.dataset, spec.data.dataset_dir, lo, &load_report));
  auto cleaned = CleanConversations(rows, CleanOptionsOf(spec.clean));
  if (!cleaned.ok()) return cleaned.status().WithContext("clean");
  const CleanResult& r = *cleaned;

  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::absolute(spec.train.output_dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) return InternalError(fmt::format("cannot create output_dir {}: {}", dir.string(), ec.message()));
  const std::string name = spec.clean.dataset_name;
  const std::string file = name + ".jsonl";
  std::string lines;
  for (const Conversation& c : r.kept)
    lines += ConversationJson(c).dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  RETURN_IF_ERROR(WriteText((dir / file).string(), lines));
  const bool tokenized = !r.kept.empty() && r.kept.front().pretokenized;
  RETURN_IF_ERROR(WriteText((dir / "dataset_info.json").string(),
                            json{{name, ConversationsDatasetInfo(file, tokenized)}}.dump(2) + "\n"));

  CleanJobResult out;
  out.report = CleanReportJson(rows.size(), load_report.skipped, r);
  RETURN_IF_ERROR(WriteText((dir / "clean_report.json").string(), out.report.dump(1) + "\n"));
  out.counts = {{"rows", rows.size()},
                {"kept", r.kept.size()},
                {"dropped", r.dropped.size()},
                {"skipped_bad_rows", load_report.skipped}};
  for (const auto& [reason, n] : r.dropped_by_reason) out.counts["dropped_" + reason] = n;
  out.summary = CleanSummary(rows.size(), r);
  out.output_dir = dir.lexically_normal().string();
  return out;
}

void AddCleanJobCommand(CLI::App& app) {
  auto args = std::make_shared<CleanJobArgs>();
  CLI::App* cmd = app.add_subcommand("clean", "Run a clean job (kind: clean): data clean into its output_dir");
  cmd->add_option("--config", args->config, "Job YAML with kind: clean")->required();
  cmd->add_option("--set", args->overrides, "Override a key: key=value (repeatable)");
  cmd->callback([args] {
    const int code = RunCleanJobCommand(*args);
    std::cout.flush();
    std::exit(code);
  });
}

}  // namespace anneal::data
