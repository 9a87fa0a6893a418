#include "trainer/parallel/dims.h"

namespace anneal::parallel {

StatusOr<ParallelDims> ParallelDims::Make(int world, int tp, int pp, const ModelShape& shape, int ep) {
  const int64_t heads = shape.heads, kv_heads = shape.kv_heads, layers = shape.layers;
  std::vector<std::string> problems;
  if (tp < 1) problems.push_back("tensor parallel size must be >= 1 (got " + std::to_string(tp) + ")");
  if (pp < 1) problems.push_back("pipeline parallel size must be >= 1 (got " + std::to_string(pp) + ")");
  if (world < 1) problems.push_back("world size must be >= 1 (got " + std::to_string(world) + ")");
  if (ep < 1) problems.push_back("expert parallel size must be >= 1 (got " + std::to_string(ep) + ")");
  if (problems.empty()) {
    if (world % (tp * pp) != 0) {
      problems.push_back("world size " + std::to_string(world) + " is not divisible by tensor " + std::to_string(tp) +
                         " x pipeline " + std::to_string(pp) + " = " + std::to_string(tp * pp) +
                         " (data parallel = world / (tp * pp) must be whole)");
    }
    if (heads % tp != 0) {
      problems.push_back("tensor parallel " + std::to_string(tp) + " does not divide the " + std::to_string(heads) +
                         " attention heads");
    }
    if (kv_heads % tp != 0 && tp % kv_heads != 0) {
      problems.push_back("tensor parallel " + std::to_string(tp) + " neither divides the " + std::to_string(kv_heads) +
                         " kv heads nor is a multiple of them (to replicate them)");
    }
    if (shape.intermediate % tp != 0) {
      problems.push_back("tensor parallel " + std::to_string(tp) + " does not divide the MLP width (intermediate_size " +
                         std::to_string(shape.intermediate) + ")");
    }
    if (shape.vocab % tp != 0) {
      problems.push_back("tensor parallel " + std::to_string(tp) + " does not divide the vocabulary (vocab_size " +
                         std::to_string(shape.vocab) + ")");
    }
    if (pp > layers) {
      problems.push_back("pipeline parallel " + std::to_string(pp) + " exceeds the " + std::to_string(layers) +
                         " layers");
    }
  }
  if (problems.empty() && ep > 1) {
    const int dp = world / (tp * pp);
    const std::string e = "expert parallel " + std::to_string(ep);
    if (shape.routed_experts <= 0) {
      problems.push_back(e + " needs a mixture-of-experts model (this one is dense)");
    } else if (shape.routed_experts % ep != 0) {
      problems.push_back(e + " does not divide the " + std::to_string(shape.routed_experts) + " routed experts");
    }
    if (dp % ep != 0) {
      problems.push_back(e + " does not divide the data parallel size " + std::to_string(dp) +
                         " (world / (tp * pp); expert parallelism is carved from data parallelism)");
    }
  }
  if (tp > 1 && shape.routed_experts > 0) {
    if (shape.expert_intermediate % tp != 0) {
      problems.push_back("tensor parallel " + std::to_string(tp) + " does not divide the routed experts' width " +
                         "(moe_intermediate_size " + std::to_string(shape.expert_intermediate) +
                         "; experts are split over tp like dense MLPs)");
    }
    if (shape.shared_intermediate % tp != 0) {
      problems.push_back("tensor parallel " + std::to_string(tp) + " does not divide the shared experts' width " +
                         std::to_string(shape.shared_intermediate));
    }
  }
  if (!problems.empty()) {
    std::string msg = "invalid parallel layout (tp=" + std::to_string(tp) + ", pp=" + std::to_string(pp) +
                      (ep != 1 ? ", ep=" + std::to_string(ep) : std::string()) + ", world=" + std::to_string(world) +
                      "): ";
    for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    return InvalidArgumentError(msg);
  }
  ParallelDims d;
  d.world_ = world;
  d.tp_ = tp;
  d.pp_ = pp;
  d.dp_ = world / (tp * pp);
  d.ep_ = ep;
  return d;
}

std::pair<int64_t, int64_t> ParallelDims::StageLayers(int pp_rank, int64_t layers) const {
  return {pp_rank * layers / pp_, (pp_rank + 1) * layers / pp_};
}

std::vector<int> ParallelDims::TpGroup(int rank) const {
  std::vector<int> g;
  for (int t = 0; t < tp_; ++t) g.push_back(RankOf(t, DpRank(rank), PpRank(rank)));
  return g;
}
std::vector<int> ParallelDims::DpGroup(int rank) const {
  std::vector<int> g;
  for (int d = 0; d < dp_; ++d) g.push_back(RankOf(TpRank(rank), d, PpRank(rank)));
  return g;
}
std::vector<int> ParallelDims::PpGroup(int rank) const {
  std::vector<int> g;
  for (int p = 0; p < pp_; ++p) g.push_back(RankOf(TpRank(rank), DpRank(rank), p));
  return g;
}

std::vector<int> ParallelDims::EpGroup(int rank) const {
  std::vector<int> g;
  const int base = EdpRank(rank) * ep_;
  for (int e = 0; e < ep_; ++e) g.push_back(RankOf(TpRank(rank), base + e, PpRank(rank)));
  return g;
}
std::vector<int> ParallelDims::EdpGroup(int rank) const {
  std::vector<int> g;
  for (int d = 0; d < dp_ / ep_; ++d) g.push_back(RankOf(TpRank(rank), d * ep_ + EpRank(rank), PpRank(rank)));
  return g;
}

std::string ParallelDims::ToString() const {
  return "tp=" + std::to_string(tp_) + " pp=" + std::to_string(pp_) + " dp=" + std::to_string(dp_) +
         (ep_ > 1 ? " ep=" + std::to_string(ep_) : std::string()) + " (world " + std::to_string(world_) + ")";
}

}  // namespace anneal::parallel
