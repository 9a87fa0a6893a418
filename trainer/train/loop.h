// The training loop of `anneal-train train` (LoRA, full or freeze fine-tuning; SFT or pre-training data).
//
// One optimizer step = gradient_accumulation_steps micro-batches of per_device_train_batch_size rows on each
// data-parallel rank; the loss is the sum of token losses divided by the label-token count of the whole
// accumulated batch (transformers' num_items_in_batch), clipped by global norm, then AdamW and the schedule.
// Every logging_steps it writes trainer_log.jsonl (LLaMA-Factory's fields) and a metrics event; every
// save_steps a checkpoint (trainer/checkpoint); every eval_steps (eval_strategy steps) the validation loss.
// At the end it exports the adapter (LoRA) or the model (full / freeze) to output_dir.
//
// Resuming (resume_from_checkpoint = path or latest) restores weights, optimizer, schedule position, sampler
// position and RNG state: on CPU fp32 the continued run is bit-identical to an uninterrupted one.
//
// Thread-safety: runs on the calling thread; SIGTERM (common/shutdown.h) stops it at the next step boundary.
#pragma once

#include "common/status.h"
#include "jobspec/jobspec.h"

namespace anneal::train {

Status RunTraining(const jobspec::JobSpec& spec);

}  // namespace anneal::train
