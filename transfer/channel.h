// Internal to anneal_transfer: one client's request channel to a TransferServer (transfer/client.h describes
// the behaviour: per-request timeout, retry on a fresh socket, server errors returned with the endpoint named,
// pipelined reads).
//
// Thread-safety: a Channel is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/status.h"
#include "transfer/client.h"
#include "transfer/manifest.h"

namespace anneal::transfer {

class Channel {
 public:
  Channel(Source source, const FetchOptions& options);
  ~Channel();

  StatusOr<Manifest> GetManifest(const std::string& subpath);
  // Reads bytes [from, size) of `path`, expected to be `size` bytes long, calling sink(offset, bytes) in order.
  // DATA_LOSS when the server reports another size or returns fewer bytes than the file holds.
  Status ReadRange(const std::string& path, uint64_t from, uint64_t size,
                   const std::function<Status(uint64_t offset, std::string_view bytes)>& sink);
  const std::string& endpoint() const { return source_.endpoint; }

 private:
  Status Open();
  Status CheckCancel() const;
  Status NoReply(int timeout_ms) const;

  Source source_;
  const FetchOptions& options_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> socket_;
  uint64_t next_request_id_ = 1;
};

}  // namespace anneal::transfer
