// ParallelDims: the 3D layout (tensor x pipeline x data) of a job, validated once.
//
// Vocabulary: an "axis" is a mesh axis (tp, pp, dp); a "dim" is a tensor dimension.
// Rank order: tp is innermost (tensor-parallel peers are consecutive ranks, so they share a node), then dp,
// then pp:  rank = pp_rank * (dp * tp) + dp_rank * tp + tp_rank.
//
// Expert parallelism (ep) is carved from data parallel as Megatron does: the dp ranks of one (tp, pp) position
// form dp / ep expert-parallel groups of ep consecutive dp ranks (dp_rank = edp_rank * ep + ep_rank); each member
// holds num_experts / ep routed experts. The ranks holding the same experts (equal ep_rank) form the
// expert-data-parallel group (dp / ep ranks), over which expert gradients are summed. Expert groups never mix
// tp or pp positions: with tp > 1 every expert is split over the tp group like a dense MLP (Megatron-core's
// default expert_tensor_parallel_size = tensor_model_parallel_size) and each tp rank exchanges its pieces' token
// slots with the same tp rank of the other ep members; with pp > 1 each stage's MoE layers use that stage's groups.
//
// Thread-safety: immutable value.
//
// Example:
//   ASSIGN_OR_RETURN(ParallelDims d, ParallelDims::Make(/*world=*/8, /*tp=*/2, /*pp=*/2, shape));
//   d.dp() == 2; d.TpRank(5) == 1;
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace anneal::parallel {

// The model sizes the layout must split evenly.
struct ModelShape {
  int64_t heads = 1, kv_heads = 1, layers = 1, intermediate = 1, vocab = 1;
  int64_t routed_experts = 0;                                // 0: a dense model
  int64_t expert_intermediate = 0, shared_intermediate = 0;  // SwiGLU widths of a routed / the shared expert
};

class ParallelDims {
 public:
  // Checks world = tp * pp * dp; tp divides the attention heads, the kv heads (or is a multiple of them: kv
  // heads are then replicated), the MLP width and the vocabulary; pp <= layers. Every violated constraint is
  // named in the error.
  // ep (expert parallelism) must divide dp and the routed experts and needs a mixture-of-experts model; tp
  // must divide the routed and shared experts' widths (experts are split over tp like dense MLPs).
  static StatusOr<ParallelDims> Make(int world, int tp, int pp, const ModelShape& shape, int ep = 1);
  // The decoder layers [begin, end) of pipeline stage `pp_rank`: an even split, earlier stages taking one
  // fewer when the layers do not divide.
  std::pair<int64_t, int64_t> StageLayers(int pp_rank, int64_t layers) const;

  int world() const { return world_; }
  int tp() const { return tp_; }
  int pp() const { return pp_; }
  int dp() const { return dp_; }
  int ep() const { return ep_; }
  int TpRank(int rank) const { return rank % tp_; }
  int DpRank(int rank) const { return (rank / tp_) % dp_; }
  int PpRank(int rank) const { return rank / (tp_ * dp_); }
  int EpRank(int rank) const { return DpRank(rank) % ep_; }
  int EdpRank(int rank) const { return DpRank(rank) / ep_; }
  int RankOf(int tp_rank, int dp_rank, int pp_rank) const { return pp_rank * dp_ * tp_ + dp_rank * tp_ + tp_rank; }
  // Ranks of the group along one axis that contains `rank`.
  std::vector<int> TpGroup(int rank) const;
  std::vector<int> DpGroup(int rank) const;
  std::vector<int> PpGroup(int rank) const;
  std::vector<int> EpGroup(int rank) const;   // ep ranks, in ep_rank order
  std::vector<int> EdpGroup(int rank) const;  // dp / ep ranks holding the same experts, in edp_rank order
  std::string ToString() const;

 private:
  int world_ = 1, tp_ = 1, pp_ = 1, dp_ = 1, ep_ = 1;
};

}  // namespace anneal::parallel
