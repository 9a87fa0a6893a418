#include "trainer/eval/eval.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/fsutil.h"
#include "trainer/data/pipeline.h"
#include "trainer/data/tokenizer.h"
#include "trainer/export/peft.h"
#include "trainer/model/generate.h"
#include "trainer/train/batch.h"
#include "trainer/train/data_config.h"
#include "trainer/train/events.h"
#include "trainer/train/finetune.h"
#include "trainer/train/runtime.h"

namespace anneal::eval {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Minimal RFC 4180 CSV: quoted fields with "" escapes and embedded newlines/commas.
StatusOr<std::vector<std::vector<std::string>>> ReadCsv(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"')
        quoted = false;
      else
        field += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().push_back(std::move(field));
      field.clear();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      rows.back().push_back(std::move(field));
      field.clear();
      rows.emplace_back();
    } else {
      field += c;
    }
  }
  if (quoted) return InvalidArgumentError(path + ": unterminated quoted field");
  if (!field.empty() || !rows.back().empty()) rows.back().push_back(std::move(field));
  if (rows.back().empty()) rows.pop_back();
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != 6) {
      return InvalidArgumentError(path + ":" + std::to_string(r + 1) +
                                  ": expected 6 fields (question,A,B,C,D,answer), got " +
                                  std::to_string(rows[r].size()));
    }
    const std::string& a = rows[r][5];
    if (a != "A" && a != "B" && a != "C" && a != "D") {
      return InvalidArgumentError(path + ":" + std::to_string(r + 1) + ": answer '" + a + "' is not one of A, B, C, D");
    }
  }
  return rows;
}

std::string FormatQuestion(const std::vector<std::string>& row, bool with_answer) {
  std::string s = row[0];
  const char* letters[] = {"A", "B", "C", "D"};
  for (int i = 0; i < 4; ++i) s += std::string("\n") + letters[i] + ". " + row[1 + i];
  s += "\nAnswer:";
  if (with_answer) s += " " + row[5] + "\n\n";
  return s;
}

StatusOr<json> RunMmlu(model::CausalLM& lm, const data::Tokenizer& tok, const jobspec::JobSpec& spec,
                       const torch::Device& device) {
  const std::string& dir = spec.eval.task_dir;
  if (dir.empty() || !fs::is_directory(dir)) {
    return InvalidArgumentError("eval.task_dir: '" + dir + "' is not a directory of <subject>_test.csv files");
  }
  std::vector<int32_t> choice_ids;
  for (const char* c : {" A", " B", " C", " D"}) {
    ASSIGN_OR_RETURN(auto ids, tok.Encode(c));
    if (ids.empty()) return InternalError("the tokenizer encodes a choice letter to nothing");
    choice_ids.push_back(ids.back());
  }
  std::vector<std::string> subjects;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const std::string suffix = "_test.csv";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      subjects.push_back(name.substr(0, name.size() - suffix.size()));
    }
  }
  std::sort(subjects.begin(), subjects.end());
  if (subjects.empty()) return InvalidArgumentError("eval.task_dir: no <subject>_test.csv in " + dir);
  torch::NoGradGuard no_grad;
  json per_subject = json::object();
  int64_t correct_all = 0, total_all = 0;
  for (const std::string& subject : subjects) {
    ASSIGN_OR_RETURN(auto test, ReadCsv(dir + "/" + subject + "_test.csv"));
    std::vector<std::vector<std::string>> dev;
    if (fs::exists(dir + "/" + subject + "_dev.csv")) {
      ASSIGN_OR_RETURN(dev, ReadCsv(dir + "/" + subject + "_dev.csv"));
    }
    std::string pretty = subject;
    std::replace(pretty.begin(), pretty.end(), '_', ' ');
    std::string header = "The following are multiple choice questions (with answers) about " + pretty + ".\n\n";
    for (int i = 0; i < std::min<int>(spec.eval.n_shot, static_cast<int>(dev.size())); ++i) {
      header += FormatQuestion(dev[i], true);
    }
    int64_t correct = 0;
    for (const auto& row : test) {
      ASSIGN_OR_RETURN(auto ids, tok.Encode(header + FormatQuestion(row, false)));
      torch::Tensor in =
          torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64).view({1, -1}).to(device);
      torch::Tensor hidden = lm->Forward({.input_ids = in});
      torch::Tensor logits = lm->Logits(hidden.select(1, hidden.size(1) - 1)).squeeze(0).to(torch::kFloat32).cpu();
      int best = 0;
      for (int c = 1; c < 4; ++c) {
        if (logits[choice_ids[c]].item<float>() > logits[choice_ids[best]].item<float>()) best = c;
      }
      correct += std::string(1, static_cast<char>('A' + best)) == row[5];
    }
    per_subject[subject] = {{"accuracy", static_cast<double>(correct) / test.size()}, {"questions", test.size()}};
    correct_all += correct;
    total_all += static_cast<int64_t>(test.size());
  }
  return json{
      {"accuracy", static_cast<double>(correct_all) / total_all}, {"questions", total_all}, {"subjects", per_subject}};
}

}  // namespace

StatusOr<json> RunEvaluation(const jobspec::JobSpec& spec) {
  train::EventSink events = train::EventSink::FromEnvironment(0);
  events.Emit("started", {{"world_size", 1}, {"pid", ::getpid()}});
  ASSIGN_OR_RETURN(torch::Device device, train::ResolveDevice(spec.train.device, "train.device"));
  model::LoadOptions lo;
  lo.device = device;
  lo.dtype = train::ComputeDtype(spec.train);
  ASSIGN_OR_RETURN(lo.quantize_linears, train::BaseQuantization(spec));
  ASSIGN_OR_RETURN(model::CausalLM lm, model::LoadCausalLM(spec.model.model_name_or_path, lo));
  if (!spec.model.adapter_name_or_path.empty()) {
    ASSIGN_OR_RETURN(std::vector<optim::TrainableParam> unused, train::ApplyFinetuning(lm, spec, 0));
    lm->to(device);
  }
  lm->eval();
  ASSIGN_OR_RETURN(auto tok, data::Tokenizer::Load(spec.model.model_name_or_path));
  json results = {{"model", spec.model.model_name_or_path}, {"adapter", spec.model.adapter_name_or_path}};
  // An eval event names what was evaluated (docs/trainer-contract.md): the model, the adapter, the dataset.
  auto eval_event = [&](const std::string& dataset, json values) {
    json fields = {
        {"step", 0}, {"model", spec.model.model_name_or_path}, {"dataset", dataset}, {"values", std::move(values)}};
    if (!spec.model.adapter_name_or_path.empty()) fields["adapter"] = spec.model.adapter_name_or_path;
    events.Emit("eval", fields);
  };
  const std::vector<std::string>& datasets =
      spec.data.eval_dataset.empty() ? spec.data.dataset : spec.data.eval_dataset;
  for (const std::string& task : spec.eval.tasks) {
    if (task == "loss" || task == "generate") {
      data::DataConfig dc = train::DataConfigFor(spec, datasets);
      ASSIGN_OR_RETURN(data::PreparedData d, data::PrepareSftData(dc));
      if (d.train.empty()) return InvalidArgumentError("eval: the evaluation dataset has no examples");
      if (task == "loss") {
        torch::NoGradGuard no_grad;
        double sum = 0;
        int64_t count = 0;
        const int bs = spec.train.per_device_eval_batch_size;
        const int32_t pad = d.tokenizer->pad_id().value_or(d.tokenizer->eos_id().value_or(0));
        for (size_t i = 0; i < d.train.size(); i += bs) {
          std::vector<int64_t> rows(d.train.begin() + i, d.train.begin() + std::min(d.train.size(), i + bs));
          train::Batch b = train::ToTensors(data::PadBatch(*d.cache, rows, pad), false, false);
          auto [loss, n] = lm->LossSum(
              lm->Forward({.input_ids = b.input_ids.to(device), .attention_mask = b.attention_mask.to(device)}),
              model::ShiftLabels(b.labels));
          sum += loss.item<double>();
          count += n;
        }
        const double mean = sum / std::max<int64_t>(count, 1);
        results["loss"] = {
            {"eval_loss", mean}, {"perplexity", std::exp(mean)}, {"tokens", count}, {"examples", d.train.size()}};
        std::string names;
        for (const std::string& name : datasets) names += (names.empty() ? "" : ",") + name;
        eval_event(names, {{"eval_loss", mean}, {"eval_perplexity", std::exp(mean)}});
      } else {
        json samples = json::array();
        model::GenerateOptions go;
        go.max_new_tokens = spec.eval.max_new_tokens;
        go.min_new_tokens = spec.eval.min_new_tokens;
        if (d.tokenizer->eos_id()) go.stop_token_ids.push_back(*d.tokenizer->eos_id());
        for (size_t i = 0; i < std::min<size_t>(d.train.size(), spec.eval.num_samples); ++i) {
          auto ids = d.cache->input_ids(d.train[i]);
          auto labels = d.cache->labels(d.train[i]);
          size_t prompt_len = 0;  // the prompt is everything before the first trained token
          while (prompt_len < labels.size() && labels[prompt_len] == -100) ++prompt_len;
          std::vector<int64_t> prompt(ids.begin(), ids.begin() + std::max<size_t>(prompt_len, 1));
          ASSIGN_OR_RETURN(auto out, model::Generate(lm, prompt, go));
          std::vector<int32_t> out32(out.begin(), out.end());
          std::vector<int32_t> p32(prompt.begin(), prompt.end());
          samples.push_back({{"prompt", d.tokenizer->Decode(p32)}, {"output", d.tokenizer->Decode(out32, true)}});
        }
        results["generate"] = samples;
      }
    } else if (task == "mmlu") {
      ASSIGN_OR_RETURN(json r, RunMmlu(lm, *tok, spec, device));
      results["mmlu"] = r;
      eval_event(spec.eval.task_dir, {{"mmlu_accuracy", r["accuracy"]}});
    } else {
      return InvalidArgumentError("eval.tasks: unknown task '" + task + "' (allowed: loss, mmlu, generate)");
    }
  }
  const std::string out_file =
      spec.eval.output_file.empty() ? spec.train.output_dir + "/eval_results.json" : spec.eval.output_file;
  RETURN_IF_ERROR(MakeDirs(fs::path(out_file).parent_path().string()));
  RETURN_IF_ERROR(WriteFileAtomic(out_file, results.dump(2) + "\n"));
  events.Emit("finished", {{"status", "ok"},
                           {"output", fs::absolute(out_file).string()},
                           {"message", "evaluation results written to " + fs::absolute(out_file).string()}});
  return results;
}

}  // namespace anneal::eval
