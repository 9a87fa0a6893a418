// `data preview`: renders the first examples of a job's datasets as the trainer will see them (tokens,
// decoded text, and which tokens carry loss), from the job YAML (jobspec/jobspec.h: spec.data and
// spec.model.model_name_or_path as the tokenizer directory).
//
// Ownership: none kept; output goes to the given stream.
// Thread-safety: single-threaded command code.
//
// Example:
//   PreviewArgs a; a.config = "job.yaml"; a.num = 2;
//   Status s = RunPreview(a, std::cout);
#pragma once

#include <ostream>
#include <string>

#include "common/status.h"
#include "trainer/data/pipeline.h"

namespace anneal::jobspec { struct JobSpec; }

namespace anneal::data {

struct PreviewArgs {
  std::string config;
  int num = 3;
};

// The trainer's data settings from a parsed job (cache under data.tokenized_cache_dir).
DataConfig DataConfigFromJob(const jobspec::JobSpec& spec);

Status RunPreview(const PreviewArgs& args, std::ostream& out);

}  // namespace anneal::data
