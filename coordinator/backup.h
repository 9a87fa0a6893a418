// Backups of the coordinator's state directory, taken while it serves (`anneal-coordinator backup`).
//
// A backup is a directory that is itself a state directory: a RocksDB checkpoint of every table (consistent:
// it holds every batch committed before the checkpoint began and none half; hard links when on the state
// directory's filesystem) plus the CurveZMQ keypair (curve.key 0600, curve.pub) and BACKUP (what, when, which
// sequence number). It appears at `out` by one rename when complete, so `out` is never a partial backup.
// Restore: stop the coordinator, move the old state directory aside, put the backup in its place, start.
//
// How a running coordinator is reached. RocksDB locks a live database (a second opener gets "locked by another
// process"), and opening it read-only or as a secondary would race the owner's compactions deleting the files
// being copied. So the checkpoint is taken by the coordinator process itself: BackupServer listens on
// `<state dir>/admin.sock`, an AF_UNIX socket (mode 0600) whose peers are checked with SO_PEERCRED: only the
// coordinator's own user and root are served, i.e. whoever could read the state directory anyway. No token and
// no network port are involved; a backup of a remote coordinator runs on its host (ssh, kubectl exec).
// RequestBackup is the client; TakeBackup does it all: through the socket when a coordinator answers, else by
// opening the (then unlocked) store itself; a store locked by a process that does not answer is an error.
//
// Wire protocol (one request per connection, lines of text): client `backup <absolute out dir>\n`; server
// `ok <sequence>\n` or `error <message>\n`, then closes. A request over 4096 bytes or slower than 10 s is dropped.
//
// Refusals (Status codes, the message names the path and why): `out` not absolute or its parent missing
// (INVALID_ARGUMENT), `out` exists and is not an empty directory (ALREADY_EXISTS), a peer that is neither the
// coordinator's user nor root (PERMISSION_DENIED, logged by the server, answered with `error`), no coordinator
// state at the directory (NOT_FOUND), locked but silent (UNAVAILABLE).
//
// Thread-safety: WriteBackup may run on any thread while the store's owner commits (StateStore::Checkpoint).
// BackupServer runs one thread that serves one request at a time; Start/Stop from the owning thread. The
// server must be stopped (or destroyed) before the store it was given.
//
// Example:
//   BackupServer backups(store.get(), "/var/lib/anneal/coordinator");
//   RETURN_IF_ERROR(backups.Start());   // the coordinator serves; then, from a shell on that host:
//   // anneal-coordinator backup --state-dir /var/lib/anneal/coordinator --out /backups/anneal-2026-12-02
//   ASSIGN_OR_RETURN(BackupResult r, TakeBackup("/var/lib/anneal/coordinator", "/backups/x"));
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "common/status.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

inline constexpr const char* kAdminSocketFile = "admin.sock";
inline constexpr const char* kBackupManifestFile = "BACKUP";

// Checks `out` (absolute, parent exists, absent or an empty directory) and writes the backup of `store`
// (whose files are in `state_dir`) there. Returns the sequence number the backup reflects.
StatusOr<uint64_t> WriteBackup(const storage::StateStore& store, const std::string& state_dir, const std::string& out);

struct BackupResult {
  uint64_t sequence = 0;
  bool online = false;  // true: taken by the running coordinator through admin.sock
};

// The whole `anneal-coordinator backup`: `out` relative paths are made absolute here (the server's working
// directory is not the caller's). `timeout_ms` bounds the wait for a running coordinator's answer.
StatusOr<BackupResult> TakeBackup(const std::string& state_dir, const std::string& out, int timeout_ms = 600000);

// Asks the coordinator serving `state_dir` for a backup at absolute `out`. NOT_FOUND / UNAVAILABLE when nothing
// listens on the socket (TakeBackup then opens the store itself); otherwise the server's answer.
StatusOr<uint64_t> RequestBackup(const std::string& state_dir, const std::string& out, int timeout_ms);

// Serves backup requests on <state_dir>/admin.sock from its own thread (see above).
class BackupServer {
 public:
  BackupServer(const storage::StateStore* store, std::string state_dir);
  ~BackupServer();  // Stop()
  BackupServer(const BackupServer&) = delete;
  BackupServer& operator=(const BackupServer&) = delete;

  // Removes a stale socket file (the store's lock proves no other coordinator uses this directory), binds,
  // listens and starts the thread. Errors name the socket path (e.g. longer than sun_path's 107 bytes).
  Status Start();
  // Wakes and joins the thread, closes and removes the socket. Idempotent.
  void Stop();
  const std::string& socket_path() const { return socket_path_; }

 private:
  void Loop();
  void Serve(int connection);

  const storage::StateStore* store_;
  std::string state_dir_;
  std::string socket_path_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace anneal::coordinator
