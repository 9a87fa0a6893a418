#include "trainer/train/runtime.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <thread>

#include "trainer/model/config.h"
#include "trainer/parallel/sharding.h"
#include "trainer/parallel/tensor_parallel.h"
#include "trainer/train/launcher_env.h"

namespace anneal::train {
namespace {

std::string Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

StatusOr<torch::Device> ResolveDevice(const std::string& name, const std::string& option, int local_rank) {
  if (name != "auto" && name != "cpu" && name != "cuda") {
    return InvalidArgumentError(option + ": unknown device '" + name + "' (allowed: auto, cpu, cuda)");
  }
  const bool cuda_ok = torch::cuda::is_available();
  if (name == "cuda" && !cuda_ok) return FailedPreconditionError(option + " cuda: no CUDA device is available");
  if (name == "cpu" || !cuda_ok) return torch::Device(torch::kCPU);
  const int count = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(count == 1 ? 0 : local_rank % count));
}

torch::ScalarType ComputeDtype(const jobspec::TrainSpec& train) {
  return train.bf16 ? torch::kBFloat16 : (train.fp16 ? torch::kFloat16 : torch::kFloat32);
}

StatusOr<Runtime> Runtime::FromEnvironment(const jobspec::JobSpec& spec) {
  Runtime rt;
  // torchrun's variables (the agent's, `anneal-train launch`'s), or Slurm's under srun.
  ASSIGN_OR_RETURN(LauncherEnv env, ReadLauncherEnv([](const char* name) { return std::getenv(name); }));
  rt.rank = env.rank;
  rt.world = env.world;
  rt.local_rank = env.local_rank;
  // The launcher (agent, torchrun, srun, anneal-train launch) decides the world size; resource keys in the spec
  // must agree with it.
  const jobspec::ResourceSpec& res = spec.resources;
  if (res.world_size_given && res.world_size() != rt.world) {
    return InvalidArgumentError(
        "the spec asks for nodes " + std::to_string(res.nodes) + " x gpus_per_node " +
        std::to_string(res.gpus_per_node) + " = " + std::to_string(res.world_size()) + " ranks but the launcher " +
        (env.launcher == "slurm" ? "started SLURM_NTASKS=" + std::to_string(env.world)
         : env.launcher != "none" || std::getenv("WORLD_SIZE") != nullptr
             ? "started WORLD_SIZE=" + std::to_string(env.world)
             : std::string("started one process (no WORLD_SIZE)")) +
        "; remove nodes and gpus_per_node from the spec to run at the launcher's world size, or launch " +
        std::to_string(res.world_size()) + " ranks");
  }
  ASSIGN_OR_RETURN(model::ModelConfig mc, model::LoadModelConfig(spec.model.model_name_or_path));
  const parallel::ModelShape shape{.heads = mc.num_attention_heads,
                                   .kv_heads = mc.num_key_value_heads,
                                   .layers = mc.num_hidden_layers,
                                   .intermediate = mc.intermediate_size,
                                   .vocab = mc.vocab_size,
                                   .routed_experts = mc.moe.num_experts,
                                   .expert_intermediate = mc.moe.moe_intermediate_size,
                                   .shared_intermediate = mc.moe.deepseek_moe
                                                              ? mc.moe.moe_intermediate_size * mc.moe.n_shared_experts
                                                              : mc.moe.shared_expert_intermediate_size};
  ASSIGN_OR_RETURN(
      rt.dims, parallel::ParallelDims::Make(rt.world, spec.resources.tensor_parallel, spec.resources.pipeline_parallel,
                                            shape, spec.resources.expert_parallel));
  // Like torchrun: several CPU ranks on one node share its cores instead of each spawning a thread per core.
  const int local_world = env.local_world;
  if (local_world > 1 && std::getenv("OMP_NUM_THREADS") == nullptr) {
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    torch::set_num_threads(std::max(1, cores / local_world));
  }
  rt.sequence_parallel = spec.resources.sequence_parallel && rt.dims.tp() > 1;
  rt.zero = spec.resources.zero_stage >= 1;  // optimizer state sharded (stage 2 also shards gradients)
  rt.schedule = spec.resources.pipeline_schedule == "gpipe" ? PipelineSchedule::kGPipe : PipelineSchedule::kOneFOneB;
  rt.dp = rt.dims.dp();
  rt.dp_rank = rt.dims.DpRank(rt.rank);
  rt.tp_rank = rt.dims.TpRank(rt.rank);
  rt.pp_rank = rt.dims.PpRank(rt.rank);
  rt.ep = rt.dims.ep();
  rt.ep_rank = rt.dims.EpRank(rt.rank);
  rt.edp_rank = rt.dims.EdpRank(rt.rank);
  const auto [layer_begin, layer_end] = rt.dims.StageLayers(rt.pp_rank, mc.num_hidden_layers);
  rt.stage = {.layer_begin = layer_begin,
              .layer_end = layer_end,
              .first = rt.pp_rank == 0,
              .last = rt.pp_rank == rt.dims.pp() - 1};
  rt.tied_embeddings = mc.tie_word_embeddings;

  ASSIGN_OR_RETURN(rt.device, ResolveDevice(spec.train.device, "train.device", rt.local_rank));
  if (rt.device.is_cuda()) {
    // Make this rank's GPU the current one: NCCL communicators and any tensor made with a bare "cuda" device
    // (barriers, scratch buffers) must not all land on GPU 0.
    c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(rt.device);
  }
  rt.dtype = ComputeDtype(spec.train);
  jobspec::JobSpec hashed = spec;
  hashed.train.resume_from_checkpoint.clear();
  rt.config_hash = Fnv1a(jobspec::ToYaml(hashed));

  if (rt.world > 1) {
    const std::string& addr = env.master_addr;
    const int port = env.master_port;
    if (addr.empty() || port == 0) {
      return InvalidArgumentError("WORLD_SIZE " + std::to_string(rt.world) + " needs MASTER_ADDR and MASTER_PORT");
    }
    const auto timeout = std::chrono::milliseconds(1000LL * spec.resources.comm_timeout_s);
    ASSIGN_OR_RETURN(rt.store, parallel::ConnectStore(addr, port, rt.rank, rt.world, timeout));
    std::vector<int> all;
    for (int r = 0; r < rt.world; ++r) all.push_back(r);
    const bool cuda = rt.device.is_cuda();
    ASSIGN_OR_RETURN(rt.world_comm, parallel::Comm::Create(rt.store, "world", all, rt.rank, cuda, timeout));
    const std::string t = std::to_string(rt.tp_rank), d = std::to_string(rt.dp_rank), p = std::to_string(rt.pp_rank);
    // Every rank creates its groups in the same axis order, so the rendezvous never waits in a cycle.
    ASSIGN_OR_RETURN(rt.tp_comm, parallel::Comm::Create(rt.store, "tp-pp" + p + "-dp" + d, rt.dims.TpGroup(rt.rank),
                                                        rt.rank, cuda, timeout));
    ASSIGN_OR_RETURN(rt.dp_comm, parallel::Comm::Create(rt.store, "dp-pp" + p + "-tp" + t, rt.dims.DpGroup(rt.rank),
                                                        rt.rank, cuda, timeout));
    ASSIGN_OR_RETURN(rt.pp_comm, parallel::Comm::Create(rt.store, "pp-dp" + d + "-tp" + t, rt.dims.PpGroup(rt.rank),
                                                        rt.rank, cuda, timeout));
    if (rt.tied_embeddings && rt.dims.pp() > 1 && (rt.stage.first || rt.stage.last)) {
      const std::vector<int> ends = {rt.dims.RankOf(rt.tp_rank, rt.dp_rank, 0),
                                     rt.dims.RankOf(rt.tp_rank, rt.dp_rank, rt.dims.pp() - 1)};
      ASSIGN_OR_RETURN(rt.tied_comm,
                       parallel::Comm::Create(rt.store, "tied-dp" + d + "-tp" + t, ends, rt.rank, cuda, timeout));
    }
    if (rt.ep > 1) {
      const std::string e = std::to_string(rt.ep_rank), g = std::to_string(rt.edp_rank);
      ASSIGN_OR_RETURN(rt.ep_comm, parallel::Comm::Create(rt.store, "ep-pp" + p + "-tp" + t + "-edp" + g,
                                                          rt.dims.EpGroup(rt.rank), rt.rank, cuda, timeout));
      ASSIGN_OR_RETURN(rt.edp_comm, parallel::Comm::Create(rt.store, "edp-pp" + p + "-tp" + t + "-ep" + e,
                                                           rt.dims.EdpGroup(rt.rank), rt.rank, cuda, timeout));
      rt.stage.experts = {.size = rt.ep, .rank = rt.ep_rank, .comm = rt.ep_comm.get()};
    }
    if (rt.dims.tp() > 1) {
      rt.factory = std::make_shared<parallel::TensorParallelFactory>(rt.tp_comm, mc.head_dim, rt.sequence_parallel);
    }
  }
  return rt;
}

int64_t Runtime::ReduceSum(int64_t v) const {
  if (!dp_comm) return v;
  at::Tensor t = torch::tensor({v}, torch::kInt64).to(device);
  dp_comm->AllReduceSum(t);
  return t.item<int64_t>();
}

bool Runtime::IsTiedDuplicate(const std::string& param_name) const {
  return tied_embeddings && dims.pp() > 1 && !stage.first && param_name == "model.embed_tokens.weight";
}

void Runtime::SyncGradients(const std::vector<optim::TrainableParam>& params,
                            const std::vector<model::ParamLayout>& layouts) const {
  if (tp_comm && tp_comm->size() > 1) {
    std::vector<std::pair<at::Tensor, model::ParamLayout>> with_layout;
    for (size_t i = 0; i < params.size(); ++i) with_layout.emplace_back(params[i].param, layouts[i]);
    parallel::SumPartialGradients(with_layout, tp_comm.get(), sequence_parallel);
  }
  if (tied_comm) {
    torch::NoGradGuard no_grad;
    for (const auto& p : params) {
      if (p.name != "model.embed_tokens.weight") continue;
      if (!p.param.grad().defined()) p.param.mutable_grad() = torch::zeros_like(p.param);
      at::Tensor g = p.param.grad();
      tied_comm->AllReduceSum(g);
    }
  }
}

double Runtime::ClipGradNorm(const std::vector<optim::TrainableParam>& params,
                             const std::vector<model::ParamLayout>& layouts, double max_norm) const {
  // Squared norms of the pieces this rank counts (each piece once over tp, the tied copy once over pp, one
  // data-parallel replica), summed over the world.
  // Under expert parallelism the routed experts count on the ranks of the first expert-data-parallel replica
  // (edp_rank 0: one expert-parallel group, every expert once), everything else on dp_rank 0.
  std::vector<optim::TrainableParam> counted, experts;
  for (size_t i = 0; i < params.size(); ++i) {
    if (parallel::CountsOnce(layouts[i], tp_rank, dims.tp()) && !IsTiedDuplicate(params[i].name)) {
      (ep > 1 && model::RoutedExpertOf(params[i].name) ? experts : counted).push_back(params[i]);
    }
  }
  double squared = dp_rank == 0 ? optim::GradNormSquared(counted) : 0.0;
  if (!experts.empty() && edp_rank == 0) squared += optim::GradNormSquared(experts);
  const double norm = std::sqrt(SumOverWorld(squared, true));
  if (max_norm > 0 && std::isfinite(norm)) {
    // torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), clamped to 1.
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    if (coef < 1.0) optim::ScaleGrads(params, coef);
  }
  return norm;
}

double Runtime::SumOverWorld(double v, bool contribute) const {
  if (!world_comm) return contribute ? v : 0.0;
  at::Tensor t = torch::tensor({contribute ? v : 0.0}, torch::kFloat64).to(device);
  world_comm->AllReduceSum(t);
  return t.item<double>();
}

bool Runtime::AnyOverWorld(bool v) const {
  if (!world_comm || world_comm->size() == 1) return v;
  // On the runtime's device: NCCL reduces CUDA tensors only, Gloo CPU ones.
  at::Tensor t = torch::tensor({v ? 1.0 : 0.0}, torch::kFloat64).to(device);
  world_comm->AllReduceMax(t);
  return t.item<double>() > 0.5;
}

void Runtime::Barrier() const {
  if (world_comm) world_comm->Barrier();
}

nlohmann::json Runtime::LayoutJson() const {
  return {{"world_size", world},
          {"tensor_parallel", dims.tp()},
          {"pipeline_parallel", dims.pp()},
          {"data_parallel", dims.dp()},
          {"expert_parallel", dims.ep()},
          {"zero_stage", zero ? 1 : 0},
          {"sequence_parallel", sequence_parallel}};
}

}  // namespace anneal::train
