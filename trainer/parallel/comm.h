// Comm: the small collective interface the trainer uses, over c10d (ProcessGroupNCCL on CUDA, ProcessGroupGloo
// on CPU). Every operation waits with the group's timeout, so a dead peer becomes an error (an exception that
// the trainer's boundary reports), never a hang.
//
// Groups are made from one TCPStore (hosted by global rank 0 at MASTER_ADDR:MASTER_PORT) through a PrefixStore
// per group, so every group has its own rendezvous namespace.
//
// Thread-safety: one thread at a time per Comm.
//
// Example:
//   ASSIGN_OR_RETURN(auto store, ConnectStore(addr, port, rank, world, timeout));
//   ASSIGN_OR_RETURN(auto dp, Comm::Create(store, "dp0", ranks, rank, /*cuda=*/false, timeout));
//   dp->AllReduceSum(grad);
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace c10d {
class Store;
class Backend;
}  // namespace c10d
namespace c10 {
template <class T, class NullType>
class intrusive_ptr;
}

namespace anneal::parallel {

struct StoreHandle;  // owns the c10d TCPStore

StatusOr<std::shared_ptr<StoreHandle>> ConnectStore(const std::string& addr, int port, int rank, int world,
                                                    std::chrono::milliseconds timeout);

class Comm {
 public:
  // `ranks` are the global ranks of the group in group order; `rank` is this process's global rank (a member).
  static StatusOr<std::shared_ptr<Comm>> Create(const std::shared_ptr<StoreHandle>& store, const std::string& name,
                                                const std::vector<int>& ranks, int rank, bool cuda,
                                                std::chrono::milliseconds timeout);
  ~Comm();

  int rank() const { return group_rank_; }  // rank within the group
  int size() const { return static_cast<int>(ranks_.size()); }
  const std::vector<int>& ranks() const { return ranks_; }

  void AllReduceSum(at::Tensor& t);
  void AllReduceMax(at::Tensor& t);
  // Starts an all-reduce of `t` in place and returns at once; the returned function waits for it (with the
  // group's timeout). `t` must stay alive and untouched until then.
  std::function<void()> AllReduceSumAsync(at::Tensor& t);
  // out [size * n...] from every rank's `in` [n...] concatenated along dim 0.
  at::Tensor AllGather(const at::Tensor& in);
  // Starts an all-gather of every rank's flat `in` [n] into `out` [size * n] (rank i's in elements
  // [i * n, (i + 1) * n)) and returns at once; the returned function waits for it (with the group's timeout).
  // Both tensors must stay alive and untouched until then. NCCL's _allgather_base, Gloo's allgather into views of
  // `out`: an all-gather's bytes (not an all-reduce's).
  std::function<void()> AllGatherAsync(const at::Tensor& in, at::Tensor& out);
  // Sum over ranks, then rank i keeps chunk i of dim 0.
  at::Tensor ReduceScatterSum(const at::Tensor& in);
  // Starts the sum of every rank's flat `in` [size * n] whose chunk i (elements [i * n, (i + 1) * n)) lands in
  // rank i's `out` [n], and returns at once; the returned function waits for it (with the group's timeout) and
  // leaves the result in `out`. Both tensors must stay alive and untouched until then; `in` is overwritten.
  // NCCL reduce-scatters; Gloo all-reduces `in` and copies this rank's chunk (its reduce-scatter does not take
  // every dtype), which costs the bandwidth of an all-reduce but gives the same sums.
  std::function<void()> ReduceScatterSumAsync(at::Tensor& in, at::Tensor& out);
  // All-to-all along dim 0: the first in_splits[0] rows of `in` go to group rank 0, the next in_splits[1] to
  // rank 1, ...; returns [sum(out_splits), ...] whose first out_splits[0] rows came from rank 0, and so on.
  // Every rank's in_splits[j] must equal rank j's out_splits[this rank]. Gloo on CPU, NCCL on CUDA.
  at::Tensor AllToAll(const at::Tensor& in, const std::vector<int64_t>& in_splits,
                      const std::vector<int64_t>& out_splits);
  void Broadcast(at::Tensor& t, int group_root);
  void Send(const at::Tensor& t, int group_dst);
  void Recv(at::Tensor& t, int group_src);
  // Posts a send and a receive together and waits for both (either may be null): neighbours that exchange in
  // both directions at once (a 1F1B pipeline) cannot deadlock on each other's blocking send.
  void SendRecv(const at::Tensor* send, int group_dst, at::Tensor* recv, int group_src);
  void Barrier();

 private:
  Comm() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<int> ranks_;
  int group_rank_ = 0;
  bool cuda_ = false;
  std::chrono::milliseconds timeout_{600000};
};

}  // namespace anneal::parallel
