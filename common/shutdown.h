// Signal handling for daemons: SIGINT and SIGTERM request a graceful shutdown.
//
// InstallShutdownHandlers() installs async-signal-safe handlers that set a flag and write one byte to a
// self-pipe. Event loops poll ShutdownFd() (readable once a shutdown was requested) next to their sockets, or
// check ShutdownRequested(). SIGPIPE is ignored so a closed peer is an error return, never a process kill.
//
// Thread-safety: install once from main() before starting threads; the queries are safe from any thread.
//
// Example:
//   anneal::InstallShutdownHandlers();
//   zmq::pollitem_t items[] = {{sock, 0, ZMQ_POLLIN, 0}, {nullptr, anneal::ShutdownFd(), ZMQ_POLLIN, 0}};
//   while (!anneal::ShutdownRequested()) { zmq::poll(items, 2, timeout); ... }
#pragma once

namespace anneal {

void InstallShutdownHandlers();
bool ShutdownRequested();
// Read end of the self-pipe; -1 before InstallShutdownHandlers().
int ShutdownFd();
// The signal number that requested shutdown (0 if none).
int ShutdownSignal();

}  // namespace anneal
