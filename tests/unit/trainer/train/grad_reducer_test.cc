// GradientReducer over a real Gloo group of two ranks (two threads of this process, each with its own TCPStore
// client and process group on loopback): the bucketed all-reduce started from backward's hooks gives the same
// sums as the plain reference (every rank's gradient added up), buckets split by size and dtype, and a
// parameter that got no gradient in the step is reduced as zeros after backward. Under ZeRO-2 (the reducer
// filling a TrainerOptimizer's shards) each rank ends with only the sums of the range it owns, the full
// gradients freed, and a step of the sharded AdamW followed by the all-gather gives every rank the parameters of
// one AdamW step on the summed gradients.
#include "trainer/train/grad_reducer.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <thread>

#include "common/net.h"
#include "trainer/parallel/comm.h"
#include "trainer/parallel/flat_shard.h"
#include "trainer/train/zero.h"

namespace anneal::train {
namespace {

// Rank `rank` of a 2-rank Gloo data-parallel group over a TCP store on `port`.
StatusOr<std::shared_ptr<parallel::Comm>> ConnectPair(int rank, int port) {
  ASSIGN_OR_RETURN(auto store, parallel::ConnectStore("127.0.0.1", port, rank, 2, std::chrono::seconds(30)));
  return parallel::Comm::Create(store, "dp", {0, 1}, rank, false, std::chrono::seconds(30));
}

// What one rank saw after Finish.
struct RankResult {
  std::string error;
  std::vector<at::Tensor> grads;
  size_t buckets = 0, early = 0;
};

// Rank `rank` of 2: parameters a [4] f32, b [3] f32, c [2] f64 and an unused u [2] f32; the loss is
// (rank + 1) * sum(a * xa + b * xb + c * xc), so each gradient is (rank + 1) * x and the reduced one 3 * x.
void RunRank(int rank, int port, int64_t bucket_bytes, RankResult* out) {
  StatusOr<std::shared_ptr<parallel::Comm>> comm = ConnectPair(rank, port);
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  // The same parameters and inputs on both ranks, without the global generator (the two ranks are threads of
  // one process and would interleave their draws).
  std::vector<optim::TrainableParam> params = {
      {"a", torch::linspace(-1.0, 1.0, 4).requires_grad_(true)},
      {"b", torch::linspace(0.5, 2.0, 3).requires_grad_(true)},
      {"c", torch::linspace(-2.0, 3.0, 2, torch::kFloat64).requires_grad_(true)},
      {"u", torch::ones({2}).requires_grad_(true)},
  };
  const at::Tensor xa = torch::linspace(0.3, -0.7, 4), xb = torch::linspace(1.5, -0.25, 3),
                   xc = torch::linspace(0.125, 0.75, 2, torch::kFloat64);
  GradientReducer reducer(params, comm->get(), bucket_bytes);
  reducer.Arm();
  const double coeff = rank + 1;
  at::Tensor loss = coeff * ((params[0].param * xa).sum() + (params[1].param * xb).sum() +
                             (params[2].param * xc).sum().to(torch::kFloat32));
  loss.backward();
  out->early = reducer.Finish();
  out->buckets = reducer.buckets();
  for (const auto& p : params) out->grads.push_back(p.param.grad().clone());
  out->grads.push_back(xa);
  out->grads.push_back(xb);
  out->grads.push_back(xc);
}

std::array<RankResult, 2> RunPair(int64_t bucket_bytes) {
  std::array<RankResult, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunRank, 1, port, bucket_bytes, &results[1]);
  RunRank(0, port, bucket_bytes, &results[0]);
  r1.join();
  return results;
}

void ExpectSummedGradients(const std::array<RankResult, 2>& results) {
  for (const RankResult& r : results) {
    ASSERT_TRUE(r.error.empty()) << r.error;
    ASSERT_EQ(r.grads.size(), 7u);
    // Reference: rank 0 contributes 1 * x, rank 1 contributes 2 * x.
    EXPECT_TRUE(torch::allclose(r.grads[0], 3 * r.grads[4])) << r.grads[0] << r.grads[4];
    EXPECT_TRUE(torch::allclose(r.grads[1], 3 * r.grads[5]));
    EXPECT_TRUE(torch::allclose(r.grads[2], 3 * r.grads[6]));
    EXPECT_EQ(r.grads[2].scalar_type(), torch::kFloat64);
    EXPECT_TRUE(torch::equal(r.grads[3], torch::zeros({2}))) << "no gradient in this step: reduced as zeros";
  }
}

TEST(GradientReducer, SmallBucketsStartDuringBackwardAndSumLikeThePlainAllReduce) {
  // 16 bytes: a [16 B] b [12 B] u [8 B] cannot share (a+b > 16), so every parameter has its own bucket; the
  // three that get a gradient start during backward, u's only in Finish.
  const auto results = RunPair(16);
  ExpectSummedGradients(results);
  EXPECT_EQ(results[0].buckets, 4u);
  EXPECT_EQ(results[0].early, 3u);
}

TEST(GradientReducer, OneBucketPerDtypeWhenTheCapIsLarge) {
  const auto results = RunPair(int64_t{25} << 20);
  ExpectSummedGradients(results);
  EXPECT_EQ(results[0].buckets, 2u) << "float32 {a, b, u} and float64 {c}";
  EXPECT_EQ(results[0].early, 1u) << "the float32 bucket waits for u, which never gets a gradient";
}

TEST(GradientReducer, DeepSpeedsReduceBucketSizeInElementsSetsTheBuckets) {
  // reduce_bucket_size 7 fp32 elements (28 bytes), filled in reverse order: u + b (20 bytes) share a bucket, a
  // (16 more) starts the next, c (float64) has its own: 3 all-reduces.
  const BucketBytes seven = ResolveBucketBytes(7, 0, 25, 2, 4096, 4);
  EXPECT_EQ(seven.reduce, 28);
  const auto results = RunPair(seven.reduce);
  ExpectSummedGradients(results);
  EXPECT_EQ(results[0].buckets, 3u);
  // "auto" is hidden_size^2 (as HF fills it): hidden 2 gives 4 elements, 16 bytes, one parameter per bucket.
  const BucketBytes automatic = ResolveBucketBytes(-1, -1, 25, 2, 2, 4);
  EXPECT_EQ(automatic.reduce, 16);
  const auto small = RunPair(automatic.reduce);
  ExpectSummedGradients(small);
  EXPECT_EQ(small[0].buckets, 4u);
}

// ZeRO-2 over two ranks: a [5] (3 + 2 owned), b [3] (2 + 1), c [2] f64 (1 + 1), u [2] (no gradient). What
// rank `rank` holds after Finish (the shard gradients and whether any full gradient survived) and after one
// optimizer step (the parameters).
struct Zero2Result {
  std::string error;
  std::vector<at::Tensor> shard_grads, params;
  bool full_grad_left = false;
  std::string collective;
};

std::vector<optim::TrainableParam> Zero2Params() {
  return {{"a", torch::linspace(-1.0, 1.0, 5).requires_grad_(true)},
          {"b", torch::linspace(0.5, 2.0, 3).requires_grad_(true)},
          {"c", torch::linspace(-2.0, 3.0, 2, torch::kFloat64).requires_grad_(true)},
          {"u", torch::ones({2}).requires_grad_(true)}};
}

// (rank + 1) * sum(a * xa + b * xb + c * xc): each gradient (rank + 1) * x, the sum over both ranks 3 * x.
at::Tensor Zero2Loss(const std::vector<optim::TrainableParam>& params, double coeff) {
  const at::Tensor xa = torch::linspace(0.3, -0.7, 5), xb = torch::linspace(1.5, -0.25, 3),
                   xc = torch::linspace(0.125, 0.75, 2, torch::kFloat64);
  return coeff * ((params[0].param * xa).sum() + (params[1].param * xb).sum() +
                  (params[2].param * xc).sum().to(torch::kFloat32));
}

constexpr optim::AdamWOptions kAdam{.lr = 0.1, .weight_decay = 0.01};

// `micro` backwards per step (gradient accumulation): the reducer is armed once for all of them.
void RunZero2Rank(int rank, int port, int64_t bucket_bytes, int micro, Zero2Result* out) {
  StatusOr<std::shared_ptr<parallel::Comm>> comm = ConnectPair(rank, port);
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  std::vector<optim::TrainableParam> params = Zero2Params();
  TrainerOptimizer opt(params, kAdam, comm->get(), /*stage=*/2, bucket_bytes);
  GradientReducer reducer(params, comm->get(), bucket_bytes, &opt.grad_params());
  out->collective = reducer.collective();
  reducer.Arm();
  for (int m = 0; m < micro; ++m) {
    Zero2Loss(params, (rank + 1) * (m + 1)).backward();
    // A bucket per parameter: a, b and c launched during their backward, so no full gradient outlives it.
    if (bucket_bytes <= 16) {
      for (size_t i = 0; i < 3; ++i) out->full_grad_left = out->full_grad_left || params[i].param.grad().defined();
    }
  }
  reducer.Finish();
  for (const auto& p : params) out->full_grad_left = out->full_grad_left || p.param.grad().defined();
  for (const auto& s : opt.grad_params()) out->shard_grads.push_back(s.param.grad().clone());
  opt.Step(0.1);
  opt.ZeroGrad();
  for (const auto& p : params) out->params.push_back(p.param.detach().clone());
}

void ExpectZero2(int64_t bucket_bytes, int micro = 1) {
  std::array<Zero2Result, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunZero2Rank, 1, port, bucket_bytes, micro, &results[1]);
  RunZero2Rank(0, port, bucket_bytes, micro, &results[0]);
  r1.join();
  // The reference: one process, the summed gradients (3 * x per micro-batch m, times m + 1), plain AdamW.
  std::vector<optim::TrainableParam> ref = Zero2Params();
  Zero2Loss(ref, 3.0 * micro * (micro + 1) / 2).backward();
  std::vector<at::Tensor> summed;
  // u got no gradient: the reducer reduces it as zeros, so AdamW steps it (weight decay) with a zero gradient.
  ref[3].param.mutable_grad() = torch::zeros({2});
  for (const auto& p : ref) summed.push_back(p.param.grad().clone());
  optim::AdamW adam(ref, kAdam);
  adam.Step(0.1);
  for (int rank = 0; rank < 2; ++rank) {
    const Zero2Result& r = results[rank];
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.collective, "reduce-scatter");
    EXPECT_FALSE(r.full_grad_left) << "rank " << rank << " kept a full gradient after its bucket was reduced";
    ASSERT_EQ(r.shard_grads.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      const auto s = parallel::FlatShard::Of(summed[i].numel(), 2, rank);
      EXPECT_EQ(r.shard_grads[i].numel(), s.owned());
      EXPECT_TRUE(torch::allclose(r.shard_grads[i], summed[i].reshape({-1}).narrow(0, s.begin, s.owned())))
          << "rank " << rank << " parameter " << i << ": " << r.shard_grads[i];
      EXPECT_TRUE(torch::allclose(r.params[i], ref[i].param.detach(), 1e-6, 1e-7))
          << "rank " << rank << " parameter " << i << " after the step: " << r.params[i] << " vs "
          << ref[i].param.detach();
    }
  }
}

// A routed expert without expert parallelism: u gets a gradient on rank 0 in the first of two micro-batches
// only. Deferred to Finish, both ranks reduce every bucket once, in order (a bucket per parameter, which would
// otherwise launch during rank 0's backward alone), and the sums equal the one-process reference.
void RunRoutedRank(int rank, int port, Zero2Result* out) {
  StatusOr<std::shared_ptr<parallel::Comm>> comm = ConnectPair(rank, port);
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  std::vector<optim::TrainableParam> params = Zero2Params();
  TrainerOptimizer opt(params, kAdam, comm->get(), /*stage=*/2, 16);
  GradientReducer reducer(params, comm->get(), 16, &opt.grad_params());
  reducer.DeferToFinish();
  reducer.Arm();
  for (int m = 0; m < 2; ++m) {
    at::Tensor loss = Zero2Loss(params, (rank + 1) * (m + 1));
    if (rank == 0 && m == 0) loss = loss + (params[3].param * torch::tensor({0.25f, -4.0f})).sum();
    loss.backward();
  }
  reducer.Finish();
  for (const auto& s : opt.grad_params()) out->shard_grads.push_back(s.param.grad().clone());
}

TEST(GradientReducer, DeferredBucketsStayInStepWhenAParameterGetsAGradientOnOneRankOnly) {
  std::array<Zero2Result, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunRoutedRank, 1, port, &results[1]);
  RunRoutedRank(0, port, &results[0]);
  r1.join();
  std::vector<optim::TrainableParam> ref = Zero2Params();
  (Zero2Loss(ref, 3.0 * 3) + (ref[3].param * torch::tensor({0.25f, -4.0f})).sum()).backward();
  for (int rank = 0; rank < 2; ++rank) {
    const Zero2Result& r = results[rank];
    ASSERT_TRUE(r.error.empty()) << r.error;
    ASSERT_EQ(r.shard_grads.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      const at::Tensor summed = ref[i].param.grad().reshape({-1});
      const auto s = parallel::FlatShard::Of(summed.numel(), 2, rank);
      EXPECT_TRUE(torch::allclose(r.shard_grads[i], summed.narrow(0, s.begin, s.owned())))
          << "rank " << rank << " parameter " << i << ": " << r.shard_grads[i];
    }
  }
}

TEST(GradientReducer, Zero2LeavesEachRankTheSumsOfItsRangeAndTheStepEqualsPlainAdamW) {
  ExpectZero2(16);                // a bucket per parameter
  ExpectZero2(int64_t{1} << 20);  // one bucket per dtype
}

// Gradient accumulation: each micro-batch's gradients are reduce-scattered and added into the shard gradients
// (bucket {u} and, per dtype, {a, b, u} never complete: Finish reduces what is left, u as zeros).
TEST(GradientReducer, Zero2ReduceScattersEveryMicroBatchIntoTheShardGradients) {
  ExpectZero2(16, /*micro=*/3);
  ExpectZero2(int64_t{1} << 20, /*micro=*/2);
}

TEST(FlatShard, CutsIntoEqualChunksTheLastShorterOrEmpty) {
  const auto last = parallel::FlatShard::Of(10, 4, 3);
  EXPECT_EQ(last.chunk, 3);
  EXPECT_EQ(last.begin, 9);
  EXPECT_EQ(last.owned(), 1);
  const auto empty = parallel::FlatShard::Of(2, 4, 3);
  EXPECT_EQ(empty.chunk, 1);
  EXPECT_EQ(empty.owned(), 0);
  int64_t covered = 0;
  for (int r = 0; r < 4; ++r) covered += parallel::FlatShard::Of(10, 4, r).owned();
  EXPECT_EQ(covered, 10);
}

}  // namespace
}  // namespace anneal::train
