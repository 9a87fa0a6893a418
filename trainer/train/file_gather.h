// FileGather: files that ranks on other nodes wrote into a directory, brought to global rank 0's copy of it when
// the nodes do not share a filesystem (docs/transfers.md, "No shared filesystem"). A checkpoint's shards
// (pipeline stages, ZeRO-1 optimizer shards) and a pipeline's stage exports are written by every rank into one
// directory path; on a shared filesystem that is one directory, on separate disks it is one per node, and rank 0
// (which commits the checkpoint or joins the export) would find files missing.
//
// Nothing is configured: Probe finds out. Rank 0 writes a marker with a fresh random name into the directory and
// broadcasts the name; every rank looks for it on its own disk. Ranks that see it share rank 0's disk; each other
// node (GROUP_RANK, the agent's and torchrun's node rank) gets one sender, its lowest such rank. With a shared
// filesystem every rank sees the marker and Gather does nothing.
//
// Gather moves the files over the world process group (Gloo or NCCL), one sender at a time:
//   sender -> rank 0: [listing bytes, file count], then the listing (JSON: relative path and size of each file
//                     it has, sorted)
//   rank 0 -> sender: one flag per file, 1 = "send it" (files rank 0 already has are not sent: replicas of a stage
//                     write the same file)
//   sender -> rank 0: each wanted file in chunks of at most kChunkBytes; rank 0 writes <path>.part, fsyncs it
//                     and renames it into place
// A path that is absolute, has a ".." part or leaves the directory is refused (rank 0 fails, naming it). Every
// rank must call Probe and Gather at the same points (they are collectives over the world group); errors are
// returned, and a sender's error leaves rank 0 waiting until the group's timeout, as any failed collective does.
//
// Thread-safety: one thread at a time (the training thread).
//
// Example (a checkpoint):
//   ASSIGN_OR_RETURN(FileGather g, FileGather::Probe(rt, tmp_dir, /*reset_remote=*/true));
//   ... every rank writes its files into tmp_dir ...; rt.Barrier();
//   RETURN_IF_ERROR(g.Gather(rt, [](const std::string&) { return true; }));
//   if (rt.rank == 0) ... commit tmp_dir ...;
//   g.RemoveRemoteCopy();
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/train/runtime.h"

namespace anneal::train {

class FileGather {
 public:
  static constexpr int64_t kChunkBytes = int64_t{64} << 20;

  // Collective. Creates `dir` where it is missing; with `reset_remote`, a sender empties its own copy of `dir`
  // first (a checkpoint's temporary directory: leftovers of an interrupted save must not be sent). Ends with a
  // barrier, so nothing is written into `dir` before every node's copy is ready.
  static StatusOr<FileGather> Probe(const Runtime& rt, const std::string& dir, bool reset_remote);

  // Collective. Copies to rank 0 the files under `dir` (recursively) that `wanted(relative path)` accepts from
  // every node that does not share rank 0's disk; with `remove_sent` a sender deletes each file it sent. Returns
  // how many files rank 0 received (0 elsewhere). An error on any rank is an error on every rank (DATA_LOSS or
  // INTERNAL naming the file), so rank 0 never commits what arrived incomplete.
  StatusOr<int64_t> Gather(const Runtime& rt, const std::function<bool(const std::string&)>& wanted,
                           bool remove_sent = false) const;

  // On a sender: removes its copy of `dir` (its files now live on rank 0's node). Elsewhere nothing.
  void RemoveRemoteCopy() const;

  bool shared() const { return senders_.empty(); }
  const std::vector<int>& senders() const { return senders_; }

 private:
  std::string dir_;
  std::vector<int> senders_;  // global ranks that send their node's files, ascending
  bool i_send_ = false;
};

}  // namespace anneal::train
