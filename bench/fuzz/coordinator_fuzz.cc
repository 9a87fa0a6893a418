// Fuzz target: every message the coordinator accepts, fed into a real Coordinator (coordinator/coordinator.h)
// over a real StateStore (RocksDB in the process's temp dir, emptied before every input) and a
// FakeClock. The input is a script of records (fuzz_support.h Reader), each one byte of operation:
//   0  agent message:  u8 peer (3 agents), chunk = AgentToCoordinator bytes (unparsable: OnBadAgentMessage)
//   1  client request: u8 peer (2 clients), chunk = ClientRequest bytes (unparsable: OnBadClientMessage)
//   2  advance the clock by u16 * 16 ms, then Tick
//   3  Tick + Flush
//   4  restart: Flush, then a new Coordinator that Recovers from the store (active jobs must survive)
//   5  Flush
// and a final Tick + Flush. Every Flush must commit (a failed commit is fatal for the daemon).
// The admin token is empty, so every client operation is reachable.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench/fuzz/fuzz_support.h"
#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "storage/state_store.h"

using anneal::fuzz::FuzzCheck;
using anneal::fuzz::FuzzFail;
namespace coord = anneal::coordinator;
namespace storage = anneal::storage;

namespace {

// The store: opened in the temp dir, emptied before every input (EmptyStore), and replaced by a fresh one every
// kInputsPerStore inputs, because the deletes pile up as RocksDB tombstones that slow every later scan.
constexpr int kInputsPerStore = 256;

// Never destroyed at exit: RocksDB's own statics may be gone by then (its destructor flushes and logs).
storage::StateStore& Store() {
  static storage::StateStore* store = nullptr;
  static int inputs = 0;
  if (store == nullptr || ++inputs % kInputsPerStore == 0) {
    const std::string dir = anneal::fuzz::ProcessTempDir() + "/state";
    delete store;
    std::filesystem::remove_all(dir);
    auto opened = storage::StateStore::Open(dir, {.create_if_missing = true, .sync_writes = false});
    if (!opened.ok()) FuzzFail("opening the state store: " + opened.status().ToString());
    store = opened->release();
  }
  return *store;
}

// Deletes every record but the schema stamp, so each input starts from a fresh cluster.
void EmptyStore(storage::StateStore& store) {
  storage::WriteBatch batch;
  for (int t = 0; t < storage::kTableCount; ++t) {
    const auto table = static_cast<storage::Table>(t);
    const anneal::Status st = store.Scan(table, "", [&](std::string_view key, std::string_view) {
      if (!(table == storage::Table::kMeta && key == "schema_version")) batch.Delete(table, key);
      return true;
    });
    if (!st.ok()) FuzzFail("scanning the state store: " + st.ToString());
  }
  if (!batch.empty() && !store.Commit(batch).ok()) FuzzFail("emptying the state store");
}

std::unique_ptr<coord::Coordinator> Start(coord::FakeClock* clock, storage::StateStore& store) {
  auto core = std::make_unique<coord::Coordinator>(coord::CoordinatorOptions{}, &store, clock);
  const anneal::Status st = core->Recover();
  if (!st.ok()) FuzzFail("Recover: " + st.ToString());
  return core;
}

void Flush(coord::Coordinator& core) {
  auto out = core.Flush();
  if (!out.ok()) FuzzFail("Flush failed (fatal for the daemon): " + out.status().ToString());
  for (const auto& msg : *out) FuzzCheck(!msg.routing_id.empty(), "every outgoing message has a peer");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  storage::StateStore& store = Store();
  EmptyStore(store);
  coord::FakeClock clock;
  auto core = Start(&clock, store);
  anneal::fuzz::Reader in(data, size);
  while (!in.empty()) {
    switch (in.U8() % 6) {
      case 0: {
        const std::string peer = "peer-node-" + std::to_string(in.U8() % 3);
        const auto bytes = in.Chunk();
        anneal::pb::AgentToCoordinator msg;
        if (msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
          core->OnAgentMessage(peer, msg);
        } else {
          core->OnBadAgentMessage(peer, anneal::InvalidArgumentError("malformed AgentToCoordinator"));
        }
        break;
      }
      case 1: {
        const std::string peer = "client-" + std::to_string(in.U8() % 2);
        const auto bytes = in.Chunk();
        anneal::pb::ClientRequest request;
        if (request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
          core->OnClientRequest(peer, request);
        } else {
          core->OnBadClientMessage(peer, 0, anneal::InvalidArgumentError("malformed ClientRequest"));
        }
        break;
      }
      case 2:
        clock.Advance(int64_t{in.U16()} * 16);
        core->Tick();
        break;
      case 3:
        core->Tick();
        Flush(*core);
        break;
      case 4: {
        Flush(*core);
        const size_t active = core->ActiveJobCount();
        core.reset();
        core = Start(&clock, store);
        FuzzCheck(core->ActiveJobCount() == active, "a restart keeps every active job");
        break;
      }
      case 5:
        Flush(*core);
        break;
    }
  }
  core->Tick();
  Flush(*core);
  size_t by_state = 0;
  for (const auto& [state, count] : core->ActiveJobsByState()) by_state += count;
  FuzzCheck(by_state == core->ActiveJobCount(), "ActiveJobsByState counts every active job");
  return 0;
}
