// The reading side of transfers: FetchManifest asks a TransferServer (transfer/server.h) for a tree's manifest;
// BlobStore keeps a node's content-addressed copy of every file it fetched and materializes trees from it.
// Used by agents (staging a job's model and dataset, replicating checkpoints) and the CLI (`anneal fetch`).
//
// Requests: each goes out on a DEALER socket (CurveZMQ client pinning Source::server_public_key). A request with
// no reply within timeout_ms is sent again on a fresh socket, up to max_retries more times; then
// DEADLINE_EXCEEDED naming the endpoint (a wrong server public key looks exactly like this: the Curve handshake
// never completes). Errors the server answers (PERMISSION_DENIED, NOT_FOUND, ...) are returned at once, with the
// endpoint as context. Read requests are pipelined (FetchOptions::window chunks in flight).
//
// BlobStore layout (one per node, e.g. <agent state>/store):
//   <root>/blobs/sha256/<hex>     complete, verified files, read-only (0444); named by their SHA-256
//   <root>/partial/<hex>.part     downloads in progress; a later Fetch resumes from the .part's length
//   <root>/trees/<manifest id>/   materialized trees (hard links to the blobs), TreePath(id)
//   <root>/verified.json          each blob's size, mtime and inode when its SHA-256 was last checked (HashCache)
// A blob only appears by rename after its size and SHA-256 were checked, so a blob enters whole and right. Before
// a blob is used again (Fetch, Materialize, AddLocal), its size, mtime and inode are compared with those recorded
// when it was checked; a blob that differs (written in place, replaced, or entered before records were kept) is
// hashed again, and one that no longer matches its name is removed (logged; Fetch then fetches it again and
// FetchStats::replaced_blobs counts it). A change that keeps size, mtime and inode (bit rot; a deliberate
// `touch -d`) is only caught by Verify(), which hashes every blob again (`anneal-agent --verify-artifacts`).
// Records are per BlobStore object, loaded at construction and written at the end of each Fetch / AddLocal; two
// processes writing at once may lose each other's records, which costs a hash, never a wrong blob.
// Two fetches of the same blob (threads or processes sharing the store) serialize on an flock of its .part;
// the second finds the blob done. Trees are built in "<dest>.partial-<pid>-<n>" and renamed into place (an
// existing different tree is exchanged atomically: common/durable_dirs.h ReplaceDirectory), so a reader never
// sees half a tree.
//
// BlobStore::Fetch outcomes:
//   OK                  every file is in the store and dest_dir holds exactly the manifest's tree
//   DATA_LOSS           a file's bytes did not match its size or SHA-256, again after one refetch from scratch
//                       (the message names the file, expected and got); no blob is left for it
//   UNAVAILABLE         a blob in the store changed while it was being checked again ("changed while hashing")
//   CANCELLED           *options.cancel was set (the .part files stay, for a resume)
//   DEADLINE_EXCEEDED   the server did not answer (see above)
//   the server's error  PERMISSION_DENIED (ticket, path), NOT_FOUND, UNAVAILABLE, ... with the endpoint named
//   UNAVAILABLE         a local disk error, naming the path
//
// Thread-safety: the free functions are thread-safe (each call has its own sockets). A BlobStore may be used by
// several threads and processes at once (flock per blob; unique temp names + rename for trees).
//
// Example (an agent staging a job's model):
//   BlobStore store(state_dir + "/store");
//   Source src{.endpoint = order.source_endpoint(), .server_public_key = order.source_key(), .ticket = order.ticket()};
//   ASSIGN_OR_RETURN(Manifest m, FetchManifest(src, ""));
//   if (m.Id() != order.manifest_id()) return DataLossError("the source's model changed since the job was submitted");
//   RETURN_IF_ERROR(store.Fetch(src, m, store.TreePath(m.Id()), {.cancel = &stop}));
//   launch ranks with model_path = store.TreePath(m.Id());
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "transfer/manifest.h"

namespace anneal::transfer {

struct Source {
  std::string endpoint;           // the serving agent's TransferServer::endpoint()
  std::string server_public_key;  // its TransferServer::public_key() (Z85)
  std::string ticket;             // signed by the coordinator for that node and root
};

// What a BlobStore::Fetch did to get its bytes (FetchOptions::stats), beyond what the log says: how much came from
// earlier fetches' .part files, how often stalled requests were sent again, which files were refetched.
struct FetchStats {
  uint64_t bytes_received = 0;          // file bytes that came over the wire and were written to .part files
  uint64_t resumed_bytes = 0;           // bytes of .part files an earlier fetch left, kept and not fetched again
  int resumed_files = 0;                // files continued from such a .part
  int re_requests = 0;                  // times a stalled file's reads were sent again on a fresh socket
  uint64_t last_re_request_offset = 0;  // the byte the last of those asked from (every byte before it was kept)
  int refetched_files = 0;              // files fetched again from scratch after their size or SHA-256 did not match
  int replaced_blobs = 0;               // blobs in the store found changed since they were checked: removed, fetched
};

struct FetchOptions {
  std::function<void(uint64_t done_bytes, uint64_t total_bytes)> progress;  // may be empty
  const std::atomic<bool>* cancel = nullptr;  // set -> CANCELLED promptly (checked between chunks)
  int timeout_ms = 30000;                     // per request; a timed-out request is retried on a fresh socket
  int max_retries = 5;
  // A Manifest request's wait: the server hashes files it has not hashed before (about 1 GB/s), so the first
  // manifest of a large tree takes a while; later ones come from its hash cache.
  int manifest_timeout_ms = 600000;
  int window = 4;                     // Read requests in flight per file
  uint64_t chunk_bytes = 4ull << 20;  // bytes per Read (<= kMaxChunkBytes)
  // BlobStore::Fetch / FetchFile: the manifest's paths are relative to <ticket root>/<subpath> (the subpath its
  // FetchManifest was given; "" = the ticket's root).
  std::string subpath;
  // BlobStore::Fetch: dest_dir gets writable copies (0644, the caller's own) instead of hard links to the
  // read-only blobs -- for `anneal fetch`, whose user edits what it gets. Costs the disk space twice.
  bool materialize_copies = false;
  // BlobStore::Fetch adds to *stats (may be null; the caller's, not reset). Each resume is also logged: "resuming
  // '<path>' from <endpoint> at byte N of M (its .part)" and "... resumed at byte N of M on a fresh socket".
  FetchStats* stats = nullptr;
};

// The manifest of <ticket root>/<subpath> on the source ("" = the root).
StatusOr<Manifest> FetchManifest(const Source& source, const std::string& subpath, const FetchOptions& options = {});

// Reads one whole file <ticket root>/<subpath>/<path> into `dest_path` (created/truncated) and checks it against
// the SHA-256 of the file's manifest (DATA_LOSS naming it). No store, no resume: for small one-off reads;
// BlobStore::Fetch is the cached, resumable way.
Status FetchFile(const Source& source, const std::string& path, const std::string& dest_path,
                 const FetchOptions& options = {});

// What BlobStore::Verify found.
struct StoreVerifyReport {
  size_t blobs_checked = 0;
  uint64_t bytes_checked = 0;
  std::vector<std::string> removed;  // names (SHA-256) of the blobs whose bytes no longer matched, now gone
};

class BlobStore {
 public:
  explicit BlobStore(std::string root);  // creates the directories (errors surface on first use)

  // Whether a file named sha256 is in the store (not checked: see CheckBlob).
  bool Has(const std::string& sha256) const;
  // true when the blob of `entry` is in the store and still matches its size and SHA-256 (hashed again only when
  // its size, mtime or inode differ from the record: see the header comment); false when it is absent, or was
  // removed just now because it no longer matched (logged as a warning naming entry.path). UNAVAILABLE when it
  // cannot be read or changes while it is hashed.
  StatusOr<bool> CheckBlob(const FileEntry& entry) const;
  // Hashes every blob again, records the ones that match and removes the ones that do not (trees that link them
  // keep their copy until a Fetch or Materialize of their manifest rebuilds them). Takes the store exclusively:
  // UNAVAILABLE "in use" while a fetch runs. Reads every byte of the store.
  StatusOr<StoreVerifyReport> Verify();
  // Records the blob's current size, mtime and inode as checked: for the store's own code, right after it hashed
  // the bytes and renamed them into place (a failure is logged: the blob is hashed again before its next use).
  void RememberBlob(const std::string& sha256) const;
  std::string BlobPath(const std::string& sha256) const;
  const std::string& root() const { return root_; }

  // See the header comment.
  Status Fetch(const Source& source, const Manifest& manifest, const std::string& dest_dir,
               const FetchOptions& options = {});
  // Adds the files of `manifest` found under `root` (a directory, or the single file) to the store without a
  // transfer: each is copied (never linked: the caller's file stays writable and its own) and checked against
  // its SHA-256 (DATA_LOSS naming the file when it differs).
  Status AddLocal(const std::string& root, const Manifest& manifest);
  // Materializes `manifest` at dest_dir from blobs already in the store (NOT_FOUND naming a missing blob):
  // hard links (copies across filesystems), or writable copies when `copies`.
  Status Materialize(const Manifest& manifest, const std::string& dest_dir, bool copies = false);

  // <root>/trees/<manifest id>: where the agent materializes a staged tree to hand its path to ranks.
  std::string TreePath(const std::string& manifest_id) const;
  // Removes, least recently used first, blobs no tree refers to (link count 1), stale .part files, and trees not
  // in `pinned_manifest_ids`, until the store holds at most max_bytes. RESOURCE_EXHAUSTED naming the bytes still
  // held when the pinned trees alone exceed it.
  Status Prune(uint64_t max_bytes, const std::set<std::string>& pinned_manifest_ids);
  // Bytes the store holds (blobs, .part files, tree files that are copies rather than links).
  uint64_t UsedBytes() const;

 private:
  std::string root_;
  std::shared_ptr<HashCache> verified_;  // shared: BlobStore stays copyable; HashCache is thread-safe
};

}  // namespace anneal::transfer
