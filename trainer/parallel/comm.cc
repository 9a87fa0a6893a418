#include "trainer/parallel/comm.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef ANNEAL_WITH_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace anneal::parallel {

struct StoreHandle {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Comm::Impl {
  c10::intrusive_ptr<c10d::Backend> backend;
};

namespace {

// The Gloo transport device of this rank. GLOO_SOCKET_IFNAME (the operator's choice) wins; else the node's
// address from the agent (ANNEAL_NODE_ADDRESS, its --address): peers on other nodes connect to the address the
// device binds, and torch's default (the hostname's address, loopback when the hostname resolves to 127.0.1.1 as
// on Debian) is unreachable from another host. An address that does not resolve falls back to the default.
std::shared_ptr<::gloo::transport::Device> GlooDevice() {
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  const char* address = std::getenv("ANNEAL_NODE_ADDRESS");
  if ((ifname == nullptr || *ifname == '\0') && address != nullptr && *address != '\0') {
    try {
      return c10d::ProcessGroupGloo::createDeviceForHostname(address);
    } catch (const std::exception&) {
      // not resolvable here: the default device below
    }
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

StatusOr<std::shared_ptr<StoreHandle>> ConnectStore(const std::string& addr, int port, int rank, int world,
                                                    std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(port);
  opts.isServer = rank == 0;
  opts.numWorkers = world;
  opts.waitWorkers = true;
  opts.timeout = timeout;
  try {
    auto h = std::make_shared<StoreHandle>();
    h->store = c10::make_intrusive<c10d::TCPStore>(addr, opts);
    return h;
  } catch (const std::exception& e) {
    return UnavailableError("rendezvous at " + addr + ":" + std::to_string(port) + " failed for rank " +
                            std::to_string(rank) + " of " + std::to_string(world) + ": " + e.what());
  }
}

StatusOr<std::shared_ptr<Comm>> Comm::Create(const std::shared_ptr<StoreHandle>& store, const std::string& name,
                                             const std::vector<int>& ranks, int rank, bool cuda,
                                             std::chrono::milliseconds timeout) {
  auto it = std::find(ranks.begin(), ranks.end(), rank);
  if (it == ranks.end()) return InternalError("rank " + std::to_string(rank) + " is not in group " + name);
  std::shared_ptr<Comm> c(new Comm());
  c->ranks_ = ranks;
  c->group_rank_ = static_cast<int>(it - ranks.begin());
  c->timeout_ = timeout;
  c->cuda_ = cuda;
  c->impl_ = std::make_unique<Impl>();
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name, store->store);
  try {
#ifdef ANNEAL_WITH_CUDA
    if (cuda) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      c->impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, c->group_rank_, c->size(), opts);
      return c;
    }
#else
    if (cuda) return FailedPreconditionError("this anneal-train was built without CUDA; NCCL is unavailable");
#endif
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = timeout;
    opts->devices.push_back(GlooDevice());
    c->impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, c->group_rank_, c->size(), opts);
  } catch (const std::exception& e) {
    return UnavailableError("cannot create process group " + name + ": " + e.what());
  }
  return c;
}

Comm::~Comm() = default;

void Comm::AllReduceSum(at::Tensor& t) {
  if (size() == 1) return;
  std::vector<at::Tensor> v = {t};
  impl_->backend->allreduce(v)->wait(timeout_);
}

std::function<void()> Comm::AllReduceSumAsync(at::Tensor& t) {
  if (size() == 1) return [] {};
  std::vector<at::Tensor> v = {t};
  c10::intrusive_ptr<c10d::Work> work = impl_->backend->allreduce(v);
  const auto timeout = timeout_;
  return [work, timeout] { work->wait(timeout); };
}

void Comm::AllReduceMax(at::Tensor& t) {
  if (size() == 1) return;
  std::vector<at::Tensor> v = {t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp(c10d::ReduceOp::MAX);
  impl_->backend->allreduce(v, o)->wait(timeout_);
}

at::Tensor Comm::AllGather(const at::Tensor& in) {
  if (size() == 1) return in.clone();
  std::vector<at::Tensor> input = {in.contiguous()};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int i = 0; i < size(); ++i) output[0].push_back(at::empty_like(input[0]));
  impl_->backend->allgather(output, input)->wait(timeout_);
  return at::cat(output[0], 0);
}

std::function<void()> Comm::AllGatherAsync(const at::Tensor& in, at::Tensor& out) {
  const int64_t n = in.numel();
  if (out.numel() != n * size() || !in.is_contiguous() || !out.is_contiguous() || in.dim() != 1 || out.dim() != 1) {
    throw std::invalid_argument("all-gather: flat contiguous input of " + std::to_string(n) +
                                " elements and output of " + std::to_string(out.numel()) + " for " +
                                std::to_string(size()) + " ranks expected");
  }
  if (size() == 1) {
    out.copy_(in);
    return [] {};
  }
  const auto timeout = timeout_;
  at::Tensor input = in;
  if (cuda_) {
    c10::intrusive_ptr<c10d::Work> work = impl_->backend->_allgather_base(out, input);
    return [work, timeout] { work->wait(timeout); };
  }
  std::vector<at::Tensor> inputs = {input};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int i = 0; i < size(); ++i) outputs[0].push_back(out.narrow(0, i * n, n));
  c10::intrusive_ptr<c10d::Work> work = impl_->backend->allgather(outputs, inputs);
  return [work, timeout] { work->wait(timeout); };
}

at::Tensor Comm::ReduceScatterSum(const at::Tensor& in) {
  // All-reduce then slice: Gloo has no reduce_scatter for CPU tensors of every dtype.
  at::Tensor t = in.contiguous().clone();
  AllReduceSum(t);
  return t.chunk(size(), 0)[group_rank_].contiguous();
}

std::function<void()> Comm::ReduceScatterSumAsync(at::Tensor& in, at::Tensor& out) {
  const int64_t n = out.numel();
  if (in.numel() != n * size()) {
    throw std::invalid_argument("reduce-scatter: input of " + std::to_string(in.numel()) + " elements for " +
                                std::to_string(size()) + " ranks of " + std::to_string(n));
  }
  if (size() == 1) {
    out.copy_(in);
    return [] {};
  }
  const auto timeout = timeout_;
  if (cuda_) {
    c10::intrusive_ptr<c10d::Work> work = impl_->backend->_reduce_scatter_base(out, in);
    return [work, timeout] { work->wait(timeout); };
  }
  std::vector<at::Tensor> v = {in};
  c10::intrusive_ptr<c10d::Work> work = impl_->backend->allreduce(v);
  const int64_t offset = n * group_rank_;
  return [work, timeout, in, out, offset, n]() mutable {
    work->wait(timeout);
    out.copy_(in.narrow(0, offset, n));
  };
}

at::Tensor Comm::AllToAll(const at::Tensor& in, const std::vector<int64_t>& in_splits,
                          const std::vector<int64_t>& out_splits) {
  int64_t rows = 0;
  for (int64_t n : out_splits) rows += n;
  std::vector<int64_t> shape = in.sizes().vec();
  shape[0] = rows;
  if (size() == 1) return in.clone();
  at::Tensor input = in.contiguous();
  at::Tensor out = at::empty(shape, input.options());
  // Copies: the backend moves the split vectors into its work item.
  std::vector<int64_t> out_counts = out_splits, in_counts = in_splits;
  impl_->backend->alltoall_base(out, input, out_counts, in_counts)->wait(timeout_);
  return out;
}

void Comm::Broadcast(at::Tensor& t, int group_root) {
  if (size() == 1) return;
  std::vector<at::Tensor> v = {t};
  c10d::BroadcastOptions o;
  o.rootRank = group_root;
  impl_->backend->broadcast(v, o)->wait(timeout_);
}

void Comm::Send(const at::Tensor& t, int group_dst) {
  SendRecv(&t, group_dst, nullptr, 0);
}

void Comm::Recv(at::Tensor& t, int group_src) {
  SendRecv(nullptr, 0, &t, group_src);
}

void Comm::SendRecv(const at::Tensor* send, int group_dst, at::Tensor* recv, int group_src) {
  std::vector<at::Tensor> out, in;
  if (send != nullptr) out.push_back(send->contiguous());
  if (recv != nullptr) in.push_back(*recv);
  // NCCL needs the pair in one group call; Gloo's point-to-point operations are asynchronous already.
  const bool coalesce = cuda_ && send != nullptr && recv != nullptr;
  if (coalesce) impl_->backend->startCoalescing();
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  if (send != nullptr) works.push_back(impl_->backend->send(out, group_dst, 0));
  if (recv != nullptr) works.push_back(impl_->backend->recv(in, group_src, 0));
  if (coalesce) {
    impl_->backend->endCoalescing()->wait(timeout_);
    return;
  }
  for (auto& w : works) w->wait(timeout_);
}

void Comm::Barrier() {
  if (size() == 1) return;
  // A tiny all-reduce: the barrier collective of some backends does not honour our timeout.
  at::Tensor t = at::zeros({1}, at::TensorOptions().device(cuda_ ? at::kCUDA : at::kCPU));
  AllReduceSum(t);
}

}  // namespace anneal::parallel
