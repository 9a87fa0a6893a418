// GradientReducer: the data-parallel gradient all-reduce in buckets, overlapped with the step's last backward
// (as PyTorch DDP does). Parameters are grouped into buckets (one dtype each, at most `bucket_bytes`) in reverse
// registration order, which is roughly the order backward produces their gradients. While armed, a hook after
// each gradient accumulation counts down its bucket; a bucket whose gradients are all final is flattened and its
// all-reduce started at once, while backward goes on with earlier layers. Finish starts what never became
// ready (parameters without a gradient in that backward), waits for everything and writes the sums back.
//
// ZeRO-2 (constructed with `shards`): each bucket is reduce-scattered instead, laid out rank-major by
// parallel::FlatShard, so this rank receives only the summed gradient of the range it owns of every parameter.
// The full gradients of the bucket are freed (set undefined) as soon as the bucket is launched; Finish leaves
// the owned sums as the .grad() of the shard tensors (shards[i] is parameter i's owned range, a 1-D view).
// At most kMaxInFlight buckets are in flight: launching one more first waits for the oldest and frees its input,
// so a rank holds its shards plus a few buckets rather than every gradient. With gradient accumulation the
// reducer is armed once for the whole step (as DeepSpeed's ZeRO-2 reduces every micro-batch): a bucket launches
// whenever the current backward has completed it and counts again for the next one, and each reduction adds
// into the shard gradients, so no full gradient outlives its micro-batch. (Every rank must launch the same
// buckets: a parameter that gets a gradient on one rank and none on another in some micro-batch, data-dependent
// routing, would desynchronise them; dense models give every trainable parameter a gradient in every backward,
// and the trainer defers a model with routed experts to Finish: DeferToFinish.)
//
// Thread-safety: used from the training thread; the hooks run inside backward on that thread (CPU) or on the
// autograd device thread (CUDA), never concurrently with Arm/Finish.
//
// Example:
//   GradientReducer reducer(params, dp_comm, 64 << 20);
//   ... backward of micro-batches 0..m-2 ...; reducer.Arm(); ... backward of the last ...; reducer.Finish();
//   // ZeRO-2/3 (shards given): reducer.Arm(); ... backward of every micro-batch ...; reducer.Finish();
#pragma once

#include <deque>
#include <functional>
#include <vector>

#include "trainer/optim/adamw.h"
#include "trainer/parallel/comm.h"

namespace anneal::train {

class GradientReducer {
 public:
  // `shards` (ZeRO-2; may be null) aligns with `params`: the owned range of each, which receives its summed
  // gradient. Both must outlive the reducer.
  GradientReducer(const std::vector<optim::TrainableParam>& params, parallel::Comm* dp, int64_t bucket_bytes,
                  const std::vector<optim::TrainableParam>* shards = nullptr);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Every bucket launched by Finish, in bucket order, none during backward (no overlap; under ZeRO-2/3 the full
  // gradients then live until the step ends, as without per-micro-batch reduction): for models whose parameters
  // may get a gradient on some ranks and not on others (routed experts without expert parallelism), so every
  // rank issues the same collectives in the same order, a missing gradient reduced as zeros.
  void DeferToFinish() { deferred_ = true; }
  bool deferred() const { return deferred_; }
  void Arm();
  // Returns how many buckets had started during backward (the overlap achieved).
  size_t Finish();
  size_t buckets() const { return buckets_.size(); }
  // "all-reduce", or "reduce-scatter" under ZeRO-2.
  const char* collective() const { return shards_ ? "reduce-scatter" : "all-reduce"; }
  // Called by the hooks: one more gradient of bucket `bucket` is final.
  void OnReady(size_t bucket);

 private:
  struct Bucket {
    std::vector<at::Tensor> params;
    std::vector<size_t> index;    // into the constructor's params (and shards)
    std::vector<int64_t> offset;  // ZeRO-2: where each parameter's chunk starts in a rank's part
    int64_t rank_elements = 0;    // ZeRO-2: one rank's part (the sum of the chunks)
    at::Tensor shard;             // ZeRO-2: this rank's summed part
    size_t pending = 0;
    bool launched = false;
    at::Tensor flat;
    std::function<void()> wait;
  };
  void Launch(Bucket& b);
  void LaunchReduceScatter(Bucket& b);
  void FinishReduceScatter(Bucket& b);

  static constexpr size_t kMaxInFlight = 2;
  std::vector<Bucket> buckets_;
  std::deque<size_t> in_flight_;  // ZeRO-2: launched buckets not yet finished, oldest first
  parallel::Comm* dp_;
  const std::vector<optim::TrainableParam>* shards_;
  bool armed_ = false;
  bool deferred_ = false;
};

}  // namespace anneal::train
