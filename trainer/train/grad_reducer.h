// GradientReducer: the data-parallel gradient all-reduce in buckets, overlapped with the step's last backward
// (as PyTorch DDP does). Parameters are grouped into buckets (one dtype each, at most `bucket_bytes`) in reverse
// registration order, which is roughly the order backward produces their gradients. While armed, a hook after
// each gradient accumulation counts down its bucket; a bucket whose gradients are all final is flattened and its
// all-reduce started at once, while backward goes on with earlier layers. Finish starts what never became
// ready (parameters without a gradient in that backward), waits for everything and writes the sums back.
//
// Thread-safety: used from the training thread; the hooks run inside backward on that thread (CPU) or on the
// autograd device thread (CUDA), never concurrently with Arm/Finish.
//
// Example:
//   GradientReducer reducer(params, dp_comm, 64 << 20);
//   ... backward of micro-batches 0..m-2 ...; reducer.Arm(); ... backward of the last ...; reducer.Finish();
#pragma once

#include <functional>
#include <vector>

#include "trainer/optim/adamw.h"
#include "trainer/parallel/comm.h"

namespace anneal::train {

class GradientReducer {
 public:
  GradientReducer(const std::vector<optim::TrainableParam>& params, parallel::Comm* dp, int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  void Arm();
  // Returns how many buckets had started during backward (the overlap achieved).
  size_t Finish();
  size_t buckets() const { return buckets_.size(); }
  // Called by the hooks: one more gradient of bucket `bucket` is final.
  void OnReady(size_t bucket);

 private:
  struct Bucket {
    std::vector<at::Tensor> params;
    size_t pending = 0;
    bool launched = false;
    at::Tensor flat;
    std::function<void()> wait;
  };
  void Launch(Bucket& b);

  std::vector<Bucket> buckets_;
  parallel::Comm* dp_;
  bool armed_ = false;
};

}  // namespace anneal::train
