// The data settings of a job spec as trainer/data's DataConfig (shared by training and evaluation).
#pragma once

#include <string>
#include <vector>

#include "jobspec/jobspec.h"
#include "trainer/data/pipeline.h"

namespace anneal::train {

// `datasets` selects which list of the spec to load (data.dataset or data.eval_dataset). The tokenized cache
// lives in data.tokenized_cache_dir, or next to the output directory (<output_dir>/../.anneal-cache) so every
// rank and every restarted attempt of the job finds it.
data::DataConfig DataConfigFor(const jobspec::JobSpec& spec, const std::vector<std::string>& datasets);

}  // namespace anneal::train
