// A protobuf message as JSON: proto field names, primitive fields printed even when default. One conversion for
// every JSON view of the protocol's records (the CLI's --json output, the coordinator's HTTP API).
//
// Thread-safety: pure function.
//
// Example:
//   std::cout << anneal::protocol::MessageToJson(job_record).dump(2) << "\n";
#pragma once

#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>

namespace anneal::protocol {

// An empty object when the message cannot be printed (protobuf refuses only malformed UTF-8 in strings).
nlohmann::json MessageToJson(const google::protobuf::Message& message);

}  // namespace anneal::protocol
