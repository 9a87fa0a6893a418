#include "trainer/data/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include "trainer/data/feedback.h"
#include "trainer/data/pairwise.h"
#include "trainer/data/stream.h"

namespace anneal::data {

namespace {

// Encodes every row on `threads` threads with `encode` (one row -> its examples, in order), then flattens in
// row order. A row that fails is an error naming its origin, or with skip_bad_rows skipped and counted.
using RowEncoder = std::function<StatusOr<std::vector<SftExample>>(const Conversation&)>;

StatusOr<std::vector<SftExample>> EncodeRows(const std::vector<Conversation>& rows, const RowEncoder& encode,
                                             bool skip_bad_rows, int threads, LoadReport* report,
                                             const ProgressFn& progress) {
  std::vector<std::vector<SftExample>> out(rows.size());
  std::vector<Status> errors(rows.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::max(1, std::min<int>(threads, static_cast<int>(rows.size())));
  std::atomic<size_t> next{0}, done{0};
  std::mutex progress_mu;
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < rows.size();) {
      auto ex = encode(rows[i]);
      if (ex.ok())
        out[i] = std::move(*ex);
      else
        errors[i] = ex.status().WithContext(rows[i].origin);
      size_t d = done.fetch_add(1) + 1;
      if (progress && (d % 1024 == 0 || d == rows.size())) {
        std::lock_guard<std::mutex> lock(progress_mu);
        progress("tokenize", static_cast<int64_t>(d), static_cast<int64_t>(rows.size()));
      }
    }
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < threads; ++k) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  std::vector<SftExample> result;
  result.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!errors[i].ok()) {
      if (!skip_bad_rows) return InvalidArgumentError(errors[i].message() + " (set skip_bad_rows to skip such rows)");
      if (report) {
        ++report->skipped;
        if (report->skipped_examples.size() < 5) report->skipped_examples.push_back(errors[i].message());
      }
      continue;
    }
    for (auto& ex : out[i]) result.push_back(std::move(ex));
  }
  return result;
}

// How many conversations each chunk of a bounded-memory build holds (the last entry repeats). Stage pt with
// packing groups each map batch (preprocessing_batch_size rows of each of preprocessing_num_workers contiguous
// shards), so its chunks are whole batches; with several shards the shard bounds need the row count, found by
// a counting pass over the datasets.
StatusOr<std::vector<int64_t>> StreamChunks(const std::vector<DatasetAttr>& attrs, const LoadOptions& lo,
                                            const DataConfig& c) {
  const int64_t rows = std::max(1, c.stream_chunk_rows);
  if (!c.pretrain || !c.pretrain_packing) return std::vector<int64_t>{rows};
  const int64_t batch = std::max(1, c.preprocessing_batch_size);
  if (c.preprocessing_num_workers <= 1) return std::vector<int64_t>{batch * std::max<int64_t>(1, rows / batch)};
  ASSIGN_OR_RETURN(std::unique_ptr<ConversationStream> counter, ConversationStream::Open(attrs, lo, nullptr));
  int64_t n = 0;
  std::vector<Conversation> chunk;
  for (bool more = true; more;) {
    chunk.clear();
    ASSIGN_OR_RETURN(more, counter->Next(static_cast<size_t>(rows), &chunk));
    n += static_cast<int64_t>(chunk.size());
  }
  // As GroupPretrainTexts: map(num_proc) never uses more processes than rows.
  const int shards = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(c.preprocessing_num_workers, n)));
  std::vector<int64_t> chunks;
  for (int s = 0; s < shards; ++s) {
    auto [lo_row, hi_row] = ContiguousShard(n, shards, s);
    for (int64_t b = lo_row; b < hi_row; b += batch) chunks.push_back(std::min(hi_row, b + batch) - b);
  }
  if (chunks.empty()) chunks.push_back(rows);
  return chunks;
}

}  // namespace

StatusOr<std::vector<SftExample>> EncodeConversations(const ChatTemplate& t, const Tokenizer& tok,
                                                      const std::vector<Conversation>& rows, const SftOptions& o,
                                                      bool skip_bad_rows, int threads, LoadReport* report,
                                                      const ProgressFn& progress) {
  auto encode = [&](const Conversation& c) -> StatusOr<std::vector<SftExample>> {
    if (!c.pretokenized) {
      ASSIGN_OR_RETURN(SftExample ex, EncodeSupervised(t, tok, c.messages, c.system, o));
      return std::vector<SftExample>{std::move(ex)};
    }
    SftExample ex = FromTokens(c.input_ids, c.labels);
    if (static_cast<int>(ex.input_ids.size()) > o.cutoff_len) {
      ex.input_ids.resize(o.cutoff_len);
      ex.labels.resize(o.cutoff_len);
    }
    return std::vector<SftExample>{std::move(ex)};
  };
  return EncodeRows(rows, encode, skip_bad_rows, threads, report, progress);
}

StatusOr<std::vector<SftExample>> EncodePairs(const ChatTemplate& t, const Tokenizer& tok,
                                              const std::vector<Conversation>& rows, int cutoff_len, bool skip_bad_rows,
                                              int threads, LoadReport* report, const ProgressFn& progress) {
  auto encode = [&](const Conversation& c) -> StatusOr<std::vector<SftExample>> {
    ASSIGN_OR_RETURN(PairExample pair, EncodePairwise(t, tok, c, cutoff_len));
    return std::vector<SftExample>{std::move(pair.chosen), std::move(pair.rejected)};
  };
  return EncodeRows(rows, encode, skip_bad_rows, threads, report, progress);
}

StatusOr<std::vector<SftExample>> EncodeFeedbackRows(const ChatTemplate& t, const Tokenizer& tok,
                                                     const std::vector<Conversation>& rows, const DataConfig& c,
                                                     LoadReport* report, const ProgressFn& progress) {
  const std::vector<int64_t> partner =
      KlPartners(static_cast<int64_t>(rows.size()), c.preprocessing_batch_size, c.preprocessing_num_workers);
  auto encode = [&](const Conversation& row) -> StatusOr<std::vector<SftExample>> {
    const size_t i = static_cast<size_t>(&row - rows.data());  // EncodeRows passes the rows themselves
    const Conversation& other = rows[static_cast<size_t>(partner[i])];
    if (other.messages.empty()) return InvalidArgumentError("the KL completion's row has no answer");
    ASSIGN_OR_RETURN(FeedbackExample f, EncodeFeedback(t, tok, row, other.messages.back(), c.sft.cutoff_len));
    SftExample tag;
    tag.input_ids = {f.desirable ? 1 : 0};
    tag.labels = {kIgnoreIndex};
    return std::vector<SftExample>{std::move(f.target), std::move(f.kl), std::move(tag)};
  };
  return EncodeRows(rows, encode, c.skip_bad_rows, c.threads, report, progress);
}

StatusOr<std::vector<SftExample>> EncodePretrainTexts(const Tokenizer& tok, std::string_view template_name,
                                                      const std::vector<Conversation>& rows, const DataConfig& c,
                                                      const ProgressFn& progress) {
  // LLaMA-Factory appends "<|end_of_text|>" for llama3 (its template's eos is <|eot_id|>), else the eos token.
  std::optional<int32_t> eos = template_name == "llama3" ? tok.TokenToId("<|end_of_text|>") : tok.eos_id();
  if (!eos) {
    return InvalidArgumentError(fmt::format("stage pt: the tokenizer has no end-of-sequence token{} to end each text",
                                            template_name == "llama3" ? " <|end_of_text|>" : ""));
  }
  std::vector<std::string> texts;
  texts.reserve(rows.size());
  for (const Conversation& row : rows) {
    if (row.pretokenized || row.messages.empty()) {
      return InvalidArgumentError(row.origin +
                                  ": stage pt needs a text column (e.g. dataset_info.json \"columns\": "
                                  "{\"prompt\": \"text\"})");
    }
    texts.push_back(row.messages[0].content);
  }
  ASSIGN_OR_RETURN(auto ids, tok.EncodeBatch(texts, c.threads));
  for (auto& text_ids : ids) text_ids.push_back(*eos);
  if (progress) progress("tokenize", static_cast<int64_t>(ids.size()), static_cast<int64_t>(ids.size()));
  PretrainOptions o;
  o.cutoff_len = c.sft.cutoff_len;
  o.packing = c.pretrain_packing;
  o.batch_size = c.preprocessing_batch_size;
  o.num_shards = c.preprocessing_num_workers;
  o.pad_id = tok.pad_id() ? tok.pad_id() : tok.eos_id();  // LLaMA-Factory sets pad to eos when there is none
  return GroupPretrainTexts(ids, o);
}

StatusOr<PreparedData> PrepareSftData(const DataConfig& c, const ProgressFn& progress) {
  PreparedData d;
  ASSIGN_OR_RETURN(d.tokenizer, Tokenizer::Load(c.tokenizer_dir));
  ASSIGN_OR_RETURN(d.chat_template, GetChatTemplate(c.template_name));
  RETURN_IF_ERROR(FixTokenizerForTemplate(d.chat_template, d.tokenizer.get()));

  // The key: everything that changes the tokens.
  ASSIGN_OR_RETURN(auto attrs, ResolveDatasets(c.datasets, c.dataset_dir));
  std::vector<std::string> parts = {fmt::format("{:016x}", d.tokenizer->fingerprint()), c.template_name};
  for (const auto& a : attrs) {
    if (c.kto != a.kto_tag.has_value()) {
      return InvalidArgumentError(fmt::format(
          "dataset {}: {} but the stage {} (dataset_info.json \"columns\": {{\"kto_tag\": \"<column>\"}} names "
          "the boolean column of a KTO dataset)",
          a.name, a.kto_tag ? "holds KTO rows (a kto_tag column)" : "has no kto_tag column",
          c.kto ? "is kto, which trains on answers tagged desirable or undesirable" : "is not kto"));
    }
    // LLaMA-Factory (data/loader.py): a ranking dataset only for the pairwise stages, and only ranking ones there.
    if (a.ranking != c.pairwise) {
      return InvalidArgumentError(fmt::format(
          "dataset {}: {} but the stage {} (set \"ranking\": true in dataset_info.json for preference data; "
          "stages dpo and rm need (chosen, rejected) pairs)",
          a.name, a.ranking ? "holds preference pairs (\"ranking\": true)" : "is not a ranking dataset",
          c.pairwise ? "is pairwise (dpo or rm)" : "is neither dpo nor rm"));
    }
    if (a.kto_tag) {
      parts.push_back(fmt::format("kto kto_tag={} messages={} prompt={} query={} response={} batch={} shards={}",
                                  *a.kto_tag, a.messages.value_or("-"), a.prompt.value_or("-"), a.query.value_or("-"),
                                  a.response.value_or("-"), c.preprocessing_batch_size, c.preprocessing_num_workers));
    }
    if (a.ranking) {
      parts.push_back(fmt::format("ranking chosen={} rejected={} messages={} prompt={} query={}",
                                  a.chosen.value_or("-"), a.rejected.value_or("-"), a.messages.value_or("-"),
                                  a.prompt.value_or("-"), a.query.value_or("-")));
    }
    for (const auto& f : a.files) {
      ASSIGN_OR_RETURN(std::string sum, FileChecksum(f));
      parts.push_back(fmt::format("{}|{}|{}|{}|{}|{}", a.name, a.formatting, a.split,
                                  a.num_samples ? *a.num_samples : -1, std::filesystem::path(f).filename().string(),
                                  sum));
    }
  }
  // The seed changes rows only through num_samples and interleave_probs; otherwise a new seed keeps the cache.
  bool seeded = !c.interleave_probs.empty() ||
                std::any_of(attrs.begin(), attrs.end(), [](const DatasetAttr& a) { return a.num_samples.has_value(); });
  parts.push_back(fmt::format("mix={} probs={} seed={}", c.mix_strategy, fmt::join(c.interleave_probs, ","),
                              seeded ? static_cast<int64_t>(c.seed) : -1));
  parts.push_back(fmt::format("cutoff={} top={} mh={} max={} skip={}", c.sft.cutoff_len, c.sft.train_on_prompt,
                              c.sft.mask_history, c.max_samples ? *c.max_samples : -1, c.skip_bad_rows));
  if (c.pretrain) {
    parts.push_back(fmt::format("pt packing={} batch={} shards={}", c.pretrain_packing, c.preprocessing_batch_size,
                                c.preprocessing_num_workers));
  }
  d.cache_key = CacheKey(parts);

  // kto pairs rows across map batches of shards; split slices and num_samples need the row count first (stream.h):
  // those load every row first.
  std::string why_not_streamed;
  const bool streamed = c.bounded_memory && !c.kto && CanStream(attrs, &why_not_streamed);
  d.streamed = streamed;
  auto build = [&](TokenCacheWriter& w) -> Status {
    LoadOptions lo;
    lo.max_samples = c.max_samples;
    lo.skip_bad_rows = c.skip_bad_rows;
    lo.response_optional = c.pretrain;
    lo.mix_strategy = c.mix_strategy;
    lo.interleave_probs = c.interleave_probs;
    lo.seed = c.seed;
    auto encode = [&](const std::vector<Conversation>& rows, const ProgressFn& p) -> StatusOr<std::vector<SftExample>> {
      if (c.pairwise)
        return EncodePairs(d.chat_template, *d.tokenizer, rows, c.sft.cutoff_len, c.skip_bad_rows, c.threads, &d.report,
                           p);
      return EncodeConversations(d.chat_template, *d.tokenizer, rows, c.sft, c.skip_bad_rows, c.threads, &d.report, p);
    };
    if (streamed) {
      // Bounded memory: a chunk of conversations read, encoded and written at a time (stream.h).
      ASSIGN_OR_RETURN(std::vector<int64_t> chunks, StreamChunks(attrs, lo, c));
      ASSIGN_OR_RETURN(std::unique_ptr<ConversationStream> stream, ConversationStream::Open(attrs, lo, &d.report));
      DataConfig one_shard = c;  // each pt chunk is whole map batches of one shard
      one_shard.preprocessing_num_workers = 1;
      std::vector<Conversation> chunk;
      int64_t done = 0;
      for (size_t k = 0;; ++k) {
        const int64_t want = chunks[std::min(k, chunks.size() - 1)];
        chunk.clear();
        ASSIGN_OR_RETURN(bool more, stream->Next(static_cast<size_t>(want), &chunk));
        if (!chunk.empty()) {
          std::vector<SftExample> examples;
          if (c.pretrain) {
            ASSIGN_OR_RETURN(examples, EncodePretrainTexts(*d.tokenizer, c.template_name, chunk, one_shard, {}));
          } else {
            ASSIGN_OR_RETURN(examples, encode(chunk, {}));
          }
          for (const auto& ex : examples) RETURN_IF_ERROR(w.Add(ex.input_ids, ex.labels));
          done += static_cast<int64_t>(chunk.size());
          if (progress) progress("tokenize", done, -1);
        }
        if (!more) break;
      }
      if (progress) progress("tokenize", done, done);
      return Status::Ok();
    }
    ASSIGN_OR_RETURN(std::vector<Conversation> rows, LoadAndMixDatasets(attrs, lo, &d.report));
    if (progress) progress("load", static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows.size()));
    std::vector<SftExample> examples;
    if (c.pretrain) {
      ASSIGN_OR_RETURN(examples, EncodePretrainTexts(*d.tokenizer, c.template_name, rows, c, progress));
    } else if (c.kto) {
      ASSIGN_OR_RETURN(examples, EncodeFeedbackRows(d.chat_template, *d.tokenizer, rows, c, &d.report, progress));
    } else {
      ASSIGN_OR_RETURN(examples, encode(rows, progress));
    }
    for (const auto& ex : examples) RETURN_IF_ERROR(w.Add(ex.input_ids, ex.labels));
    return Status::Ok();
  };
  if (c.cache_dir.empty()) return InvalidArgumentError("PrepareSftData: cache_dir is empty");
  std::string description = fmt::format("template={} datasets={}", c.template_name, fmt::join(c.datasets, ","));
  ASSIGN_OR_RETURN(d.cache,
                   TokenCache::OpenOrBuild(c.cache_dir, d.cache_key, description, build, c.cache_wait_timeout_s));
  // Pairs are split, not rows: every index then names a pair's chosen row (its rejected row follows).
  const int64_t per_example = c.kto ? 3 : c.pairwise ? 2 : 1;
  ASSIGN_OR_RETURN(auto split, SplitTrainVal(d.cache->size() / per_example, c.val_size, c.seed));
  for (int64_t& i : split.first) i *= per_example;
  for (int64_t& i : split.second) i *= per_example;
  d.train = std::move(split.first);
  d.val = std::move(split.second);
  d.pairwise = c.pairwise;
  d.kto = c.kto;
  return d;
}

}  // namespace anneal::data
