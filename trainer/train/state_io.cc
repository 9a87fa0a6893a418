#include "trainer/train/state_io.h"

#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "trainer/model/rng.h"
#include "trainer/model/safetensors.h"
#include "trainer/model/safetensors_stream.h"
#include "trainer/parallel/sharding.h"
#include "trainer/train/finetune.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Every safetensors file in `dir` whose name starts with `prefix`, seen as one name -> tensor map.
class NamedTensorFiles {
 public:
  static StatusOr<NamedTensorFiles> Open(const std::string& dir, const std::string& prefix) {
    NamedTensorFiles files;
    std::error_code ec;
    std::vector<std::string> paths;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind(prefix, 0) == 0 && e.path().extension() == ".safetensors") paths.push_back(e.path().string());
    }
    if (ec) return NotFoundError("cannot list " + dir + ": " + ec.message());
    if (paths.empty()) return NotFoundError(dir + " has no " + prefix + "*.safetensors");
    std::sort(paths.begin(), paths.end());
    for (const auto& path : paths) {
      ASSIGN_OR_RETURN(auto f, model::SafetensorsFile::Open(path));
      for (const auto& [name, _] : f->entries()) files.file_of_.emplace(name, f);
      files.sources_ += (files.sources_.empty() ? "" : ", ") + fs::path(path).filename().string();
    }
    return files;
  }
  bool Contains(const std::string& name) const { return file_of_.count(name) != 0; }
  StatusOr<at::Tensor> Tensor(const std::string& name) const {
    auto it = file_of_.find(name);
    if (it == file_of_.end()) return DataLossError("'" + name + "' is in none of " + sources_);
    return it->second->Tensor(name);
  }
  StatusOr<NamedTensors> All() const {
    NamedTensors out;
    for (const auto& [name, f] : file_of_) {
      ASSIGN_OR_RETURN(at::Tensor t, f->Tensor(name));
      out.emplace_back(name, t);
    }
    return out;
  }

 private:
  std::map<std::string, std::shared_ptr<model::SafetensorsFile>> file_of_;
  std::string sources_;
};

// Full tensor from a file -> this rank's piece, checking the full shape.
StatusOr<at::Tensor> PieceOf(const NamedTensorFiles& files, const std::string& key, const at::Tensor& local,
                             const model::ParamLayout& layout) {
  ASSIGN_OR_RETURN(at::Tensor full, files.Tensor(key));
  const std::vector<int64_t> want = layout.FullShape(local.sizes());
  if (full.sizes().vec() != want) {
    return DataLossError("'" + key + "' has shape " + c10::str(full.sizes()) + ", this model needs " +
                         c10::str(c10::IntArrayRef(want)));
  }
  return layout.Slice(full);
}

// Expert parallelism: `mine` (this rank's tensors, in the same order on every rank of the expert-parallel group)
// with each routed expert's tensor replaced by the group's: one all-gather per tensor, the peers' copies named
// by their own expert ids. A collective over rt.ep_comm; `mine` unchanged when ep is 1.
NamedTensors WithPeerExperts(NamedTensors mine, const Runtime& rt) {
  if (rt.ep <= 1) return mine;
  NamedTensors all;
  for (auto& [name, t] : mine) {
    const std::optional<int64_t> expert = model::RoutedExpertOf(name);
    if (!expert) {
      all.emplace_back(name, t);
      continue;
    }
    const at::Tensor ids =
        rt.ep_comm->AllGather(torch::tensor({*expert}, torch::kInt64).to(t.device())).cpu().contiguous();
    const at::Tensor stacked = rt.ep_comm->AllGather(t.contiguous().unsqueeze(0));  // [ep, ...]
    const std::string marker = ".mlp.experts." + std::to_string(*expert) + ".";
    const size_t at = name.find(marker);
    for (int r = 0; r < rt.ep; ++r) {
      const std::string peer = name.substr(0, at) + ".mlp.experts." + std::to_string(ids.data_ptr<int64_t>()[r]) + "." +
                               name.substr(at + marker.size());
      all.emplace_back(peer, stacked[r]);
    }
  }
  return all;
}

// The rank that writes a replica's files: data-parallel rank 0; under expert parallelism the whole first
// expert-parallel group takes part (its members hold the experts), and its rank 0 writes.
bool InWritingReplica(const Runtime& rt) {
  return rt.ep > 1 ? rt.edp_rank == 0 : rt.dp_rank == 0;
}

std::string StageFile(const std::string& dir, const std::string& stem, const Runtime& rt) {
  return dir + "/" + stem + "-stage" + std::to_string(rt.pp_rank) + ".safetensors";
}

}  // namespace

const model::ParamLayout& TrainableSet::LayoutOf(const std::string& name) const {
  static const model::ParamLayout kWhole;
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].name == name) return layouts[i];
  }
  return kWhole;
}

TrainableSet WithLayouts(model::CausalLM& lm, std::vector<optim::TrainableParam> params) {
  std::map<std::string, model::ParamLayout> by_name;
  for (const auto& p : lm->LayoutParameters()) by_name[p.name] = p.layout;
  TrainableSet set;
  for (auto& p : params) set.layouts.push_back(by_name[p.name]);
  set.params = std::move(params);
  return set;
}

// A stage file's tensors as they arrive: streamed into the file on the rank that writes it (the header first,
// from `entries`: a ZeRO-3 save never holds more than the tensor being gathered), or, under expert parallelism,
// collected and written at the end (the peers' experts join the list: WithPeerExperts). Every rank of the gathers
// calls Add for every tensor in the same order (`keep` false where this rank does not write it); a failed write
// is kept and returned by Finish, so the collectives of the other ranks still complete.
class StageFileSink {
 public:
  StageFileSink(const Runtime& rt, std::string path, bool writes,
                std::vector<model::SafetensorsStreamWriter::Entry> entries)
      : rt_(rt), path_(std::move(path)), writes_(writes), collect_(rt.ep > 1) {
    if (!writes_ || collect_) return;
    auto writer = model::SafetensorsStreamWriter::Open(path_, std::move(entries));
    if (writer.ok()) {
      writer_ = std::move(*writer);
    } else {
      status_ = writer.status();
    }
  }
  void Add(const std::string& name, const at::Tensor& t, bool keep) {
    if (!keep) return;
    if (collect_) {
      collected_.emplace_back(name, t);
    } else if (writer_ && status_.ok()) {
      status_ = writer_->Append(t);
    }
  }
  // Expert parallelism: a collective over the expert-parallel group (every rank that called Add).
  Status Finish() {
    if (collect_) {
      NamedTensors all = WithPeerExperts(std::move(collected_), rt_);
      return writes_ ? model::WriteSafetensors(path_, all) : Status::Ok();
    }
    if (!status_.ok() || !writer_) return status_;
    return writer_->Close();
  }

 private:
  const Runtime& rt_;
  std::string path_;
  bool writes_, collect_;
  std::unique_ptr<model::SafetensorsStreamWriter> writer_;
  NamedTensors collected_;
  Status status_ = Status::Ok();
};

Status WriteTrainingState(const TrainableSet& trainable, const TrainerOptimizer& opt, const Runtime& rt,
                          const std::string& dir) {
  parallel::Comm* tp = rt.tp_comm.get();
  using Entry = model::SafetensorsStreamWriter::Entry;
  // Trainable parameters: replica 0 of each stage gathers over tp; its tp rank 0 writes. Under ZeRO-3 every
  // replica takes part in gathering each sharded parameter, one at a time (the others drop it at once), and the
  // writing rank streams each into the file as it arrives.
  if (InWritingReplica(rt) || opt.shards_parameters()) {
    const auto keeps = [&](const std::string& name) {
      return InWritingReplica(rt) && rt.tp_rank == 0 && !rt.IsTiedDuplicate(name);
    };
    std::vector<Entry> entries;
    for (size_t i = 0; i < trainable.params.size(); ++i) {
      const auto& p = trainable.params[i];
      if (keeps(p.name)) {
        entries.push_back({p.name, p.param.scalar_type(), trainable.layouts[i].FullShape(p.param.sizes())});
      }
    }
    // DeepSeek-V3's expert biases (buffers, replicated) follow the parameters, from the writing rank.
    const bool writes = InWritingReplica(rt) && rt.tp_rank == 0 && rt.dp_rank == 0;
    if (writes) {
      for (const auto& [name, t] : trainable.buffers) entries.push_back({name, t.scalar_type(), t.sizes().vec()});
    }
    StageFileSink sink(rt, StageFile(dir, "trainable", rt), writes, std::move(entries));
    for (size_t i = 0; i < trainable.params.size(); ++i) {
      const auto& p = trainable.params[i];
      at::Tensor local = opt.FullParam(p.name);
      if (!InWritingReplica(rt)) continue;
      sink.Add(p.name, parallel::GatherFull(local, trainable.layouts[i], tp), keeps(p.name));
    }
    for (const auto& [name, t] : trainable.buffers) sink.Add(name, t.detach(), writes);
    RETURN_IF_ERROR(sink.Finish());
  }
  // Optimizer state, full per parameter: every replica under ZeRO-1, 2 and 3 (each writes the parameters it owns,
  // ZeRO-2/3's gathered over data parallel first), else replica 0.
  if (rt.zero || InWritingReplica(rt)) {
    const bool writes = rt.tp_rank == 0 && (rt.zero || rt.dp_rank == 0);
    const auto keeps = [&](const std::string& param) {
      return opt.WritesCheckpointState(param) && rt.tp_rank == 0 && !rt.IsTiedDuplicate(param);
    };
    const model::RngState rng = model::RngState::Capture(rt.device);
    std::map<std::string, at::Tensor> shapes;
    for (auto& [key, t] : opt.CheckpointShapes()) shapes.emplace(key, t);
    std::vector<Entry> entries;
    for (const auto& [key, local] : opt.StateTensors()) {
      const std::string param = key.substr(key.find('.') + 1);  // exp_avg.<param> -> <param>
      if (!keeps(param)) continue;
      auto it = shapes.find(key);
      if (it == shapes.end()) return InternalError("optimizer state '" + key + "' has no checkpoint shape");
      entries.push_back({key, it->second.scalar_type(), trainable.LayoutOf(param).FullShape(it->second.sizes())});
    }
    entries.push_back({"rng.cpu", rng.cpu.scalar_type(), rng.cpu.sizes().vec()});
    if (rng.device.defined()) entries.push_back({"rng.cuda", rng.device.scalar_type(), rng.device.sizes().vec()});
    const std::string path =
        dir + "/optimizer-stage" + std::to_string(rt.pp_rank) + "-dp" + std::to_string(rt.dp_rank) + ".safetensors";
    StageFileSink sink(rt, path, writes, std::move(entries));
    // One state tensor gathered at a time (ZeRO-2/3); each rank keeps only those it writes.
    for (const auto& [key, local] : opt.StateTensors()) {
      const at::Tensor t = opt.CheckpointStateOf(key, local);
      const std::string param = key.substr(key.find('.') + 1);
      if (!opt.WritesCheckpointState(param)) continue;  // the same on every tensor-parallel rank
      sink.Add(key, parallel::GatherFull(t, trainable.LayoutOf(param), tp), keeps(param));
    }
    sink.Add("rng.cpu", rng.cpu, writes);
    if (rng.device.defined()) sink.Add("rng.cuda", rng.device, writes);
    RETURN_IF_ERROR(sink.Finish());
  }
  return Status::Ok();
}

Status CheckStateFiles(const Runtime& rt, const std::string& dir) {
  std::vector<std::string> expected;
  for (int s = 0; s < rt.dims.pp(); ++s) {
    expected.push_back("trainable-stage" + std::to_string(s) + ".safetensors");
    for (int d = 0; d < (rt.zero ? rt.dims.dp() : 1); ++d) {
      expected.push_back("optimizer-stage" + std::to_string(s) + "-dp" + std::to_string(d) + ".safetensors");
    }
  }
  for (const auto& name : expected) {
    if (!fs::exists(dir + "/" + name)) {
      return FailedPreconditionError(dir + "/" + name +
                                     " is missing: its rank wrote it on another node, which this "
                                     "node cannot see; put output_dir on a filesystem shared by every node of the job");
    }
  }
  return Status::Ok();
}

Status ReadTrainingState(const TrainableSet& trainable, TrainerOptimizer& opt, const std::string& dir,
                         int64_t optimizer_steps) {
  torch::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(NamedTensorFiles params, NamedTensorFiles::Open(dir, "trainable-"));
  for (size_t i = 0; i < trainable.params.size(); ++i) {
    const auto& p = trainable.params[i];
    ASSIGN_OR_RETURN(at::Tensor piece, PieceOf(params, p.name, p.param, trainable.layouts[i]));
    opt.SetParam(p.name, piece);  // ZeRO-3: into the owned range of the shard
  }
  for (const auto& [name, buffer] : trainable.buffers) {
    if (!params.Contains(name)) continue;  // written by a run that did not carry it: the base model's value stands
    ASSIGN_OR_RETURN(at::Tensor t, params.Tensor(name));
    if (t.sizes() != buffer.sizes()) {
      return DataLossError("'" + name + "' has shape " + c10::str(t.sizes()) + ", this model needs " +
                           c10::str(buffer.sizes()));
    }
    buffer.copy_(t);
  }
  ASSIGN_OR_RETURN(NamedTensorFiles state, NamedTensorFiles::Open(dir, "optimizer-"));
  NamedTensors mine;
  for (const auto& [key, t] : opt.CheckpointShapes()) {
    const std::string param = key.substr(key.find('.') + 1);
    ASSIGN_OR_RETURN(at::Tensor piece, PieceOf(state, key, t, trainable.LayoutOf(param)));
    mine.emplace_back(key, piece.to(t.device()));
  }
  RETURN_IF_ERROR(opt.LoadCheckpointState(mine, optimizer_steps));
  // The RNG streams continue where the checkpoint left them: the CPU's, and the GPU's when both the writer and
  // this rank ran on CUDA (a CPU checkpoint resumed on a GPU keeps the GPU's fresh stream, and vice versa).
  model::RngState rng;
  rng.where = trainable.params.empty() ? c10::Device(c10::kCPU) : trainable.params.front().param.device();
  if (state.Contains("rng.cpu")) {
    ASSIGN_OR_RETURN(at::Tensor cpu, state.Tensor("rng.cpu"));
    rng.cpu = cpu.clone();
  }
  if (state.Contains("rng.cuda") && rng.where.is_cuda()) {
    ASSIGN_OR_RETURN(at::Tensor cuda, state.Tensor("rng.cuda"));
    rng.device = cuda.clone();
  }
  rng.Restore();
  return Status::Ok();
}

StatusOr<NamedTensors> ReadTrainable(const std::string& dir) {
  ASSIGN_OR_RETURN(NamedTensorFiles files, NamedTensorFiles::Open(dir, "trainable-"));
  return files.All();
}

Status WriteStageExport(model::CausalLM& lm, const Runtime& rt, bool lora_only, const std::string& out,
                        TrainerOptimizer* opt) {
  const bool sharded = opt != nullptr && opt->shards_parameters();
  if (!InWritingReplica(rt) && !sharded) return Status::Ok();  // replicas hold the same weights
  std::map<std::string, model::Linear> lora_modules;           // "<module>.weight" -> its LoRA layer (a merged export)
  if (!lora_only) {
    for (auto& [name, lin] : LoraModules(lm)) lora_modules.emplace(name + ".weight", lin);
  }
  // ZeRO-3, merged: a LoRA layer's factors are sharded, so its decoder layer is gathered (the layer hook, a
  // collective) while its merged weights are computed, one layer at a time, and freed when the next one comes.
  const auto use_layer = sharded ? opt->LayerUseHook() : nullptr;
  int64_t gathered = -1;
  const auto exported = [&](const model::LayoutParam& p) {
    const bool lora = p.name.find(".lora_") != std::string::npos;
    // An adapter also carries the modules trained in full next to it (additional_target: peft's modules_to_save).
    const bool saved_module = !lora && p.tensor.requires_grad();
    return lora_only ? (lora || saved_module) : !lora;
  };
  const auto keeps = [&](const std::string& name) {
    return InWritingReplica(rt) && rt.tp_rank == 0 && !rt.IsTiedDuplicate(name);
  };
  // Streamed into the stage file as each tensor is gathered (the header from the names, dtypes and full shapes).
  std::vector<model::SafetensorsStreamWriter::Entry> entries;
  for (const model::LayoutParam& p : lm->LayoutParameters()) {
    if (exported(p) && keeps(p.name))
      entries.push_back({p.name, p.tensor.scalar_type(), p.layout.FullShape(p.tensor.sizes())});
  }
  StageFileSink sink(rt, out + "/.export-stage" + std::to_string(rt.pp_rank) + ".safetensors",
                     InWritingReplica(rt) && rt.tp_rank == 0 && rt.dp_rank == 0, std::move(entries));
  for (const model::LayoutParam& p : lm->LayoutParameters()) {
    if (!exported(p)) continue;
    auto it = lora_modules.find(p.name);
    if (it != lora_modules.end() && use_layer && ZeroThreeUnitOf(p.name) != gathered) {
      if (gathered >= 0) use_layer(gathered, false);
      gathered = ZeroThreeUnitOf(p.name);
      if (gathered >= 0) use_layer(gathered, true);  // the root unit is gathered by the caller
    }
    // ZeRO-3: a trainable parameter all-gathered from the shards (a collective over data parallel).
    const at::Tensor local = it != lora_modules.end()        ? it->second->MergedWeight()
                             : sharded && opt->Holds(p.name) ? opt->FullParam(p.name)
                                                             : p.tensor.detach();
    if (!InWritingReplica(rt)) continue;
    sink.Add(p.name, parallel::GatherFull(local, p.layout, rt.tp_comm.get()), keeps(p.name));
  }
  if (gathered >= 0) use_layer(gathered, false);
  if (!InWritingReplica(rt)) return Status::Ok();  // ZeRO-3: took part in the gathers only
  return sink.Finish();
}

StatusOr<NamedTensors> ReadStageExports(const std::string& out, int stages) {
  NamedTensors all;
  for (int s = 0; s < stages; ++s) {
    const std::string path = out + "/.export-stage" + std::to_string(s) + ".safetensors";
    if (!fs::exists(path)) {
      return FailedPreconditionError(path + " is missing: pipeline stage " + std::to_string(s) +
                                     " did not write it, or it was not gathered from its node (file_gather.h)");
    }
    ASSIGN_OR_RETURN(auto f, model::SafetensorsFile::Open(path));
    for (const auto& [name, _] : f->entries()) {
      ASSIGN_OR_RETURN(at::Tensor t, f->Tensor(name));
      all.emplace_back(name, std::move(t));  // a view of the mapping, which outlives the unlinked file
    }
  }
  for (int s = 0; s < stages; ++s) {
    std::error_code ec;
    fs::remove(out + "/.export-stage" + std::to_string(s) + ".safetensors", ec);
  }
  return all;
}

}  // namespace anneal::train
