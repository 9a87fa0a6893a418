// Moving between this rank's pieces of parameters (model::ParamLayout) and full tensors over the
// tensor-parallel group: gathering for checkpoints and exports, summing partial gradients, and deciding which
// copy of a replicated tensor counts in a global norm.
//
// Every function taking a Comm is a collective: all ranks of the group call it, in the same order.
//
// Thread-safety: one thread at a time per Comm.
#pragma once

#include <vector>

#include "trainer/model/linear.h"
#include "trainer/parallel/comm.h"

namespace anneal::parallel {

// This rank's piece -> the full tensor (every rank of `tp` gets it). Unsharded tensors come back as they are.
// `tp` may be null (tensor parallel degree 1).
at::Tensor GatherFull(const at::Tensor& piece, const model::ParamLayout& layout, Comm* tp);

// Sums the gradients marked partial_grad over the ranks holding the same piece: fully replicated ones in one
// flat all-reduce, pieces held by a subset of ranks (replicated kv heads) through a zero-padded full tensor.
// With sequence parallelism every replicated parameter's gradient is partial (each rank saw part of the
// sequence).
void SumPartialGradients(const std::vector<std::pair<at::Tensor, model::ParamLayout>>& params, Comm* tp,
                         bool sequence_parallel = false);

// One flat 1-D tensor of `tensors` (same dtype), and back: the buckets of every fused collective.
at::Tensor Flatten(const std::vector<at::Tensor>& tensors);
void CopyFromFlat(const at::Tensor& flat, const std::vector<at::Tensor>& tensors);

// Whether this rank's copy of a parameter is the one that counts when summing over the tensor-parallel group
// (each piece once): pieces held by one rank always, replicated ones on the first rank holding them.
bool CountsOnce(const model::ParamLayout& layout, int tp_rank, int tp_size);

}  // namespace anneal::parallel
