// Preemption of a training run: SIGUSR1 asks anneal-train to save a checkpoint at the next step boundary and
// exit with kPreemptedExitCode (docs/trainer-contract.md, "Signals and exit codes").
//
// The signal reaches the ranks of a job at different times (the agent signals each rank's own pid; a launcher
// forwards it), so a rank never acts on its own flag alone: at every step boundary the ranks agree with one
// MAX all-reduce of their flags over the world group (Runtime::AnyOverWorld), and every rank stops at the same
// step. With WORLD_SIZE 1 there is no collective.
//
// Thread-safety: InstallPreemptHandler() once from main() (or a command's callback) before threads that matter;
// the handler only stores into a lock-free atomic (async-signal-safe); the queries are safe from any thread.
//
// Example:
//   InstallPreemptHandler();
//   while (steps remain) { if (rt.AnyOverWorld(PreemptRequested())) return Preempt(); TrainStep(); }
#pragma once

namespace anneal::train {

// A rank that checkpointed and stopped on a preemption request exits with this code (EX_TEMPFAIL, "try again
// later"). It equals protocol::kPreemptedExitCode, which the agent checks; the trainer never links the
// protocol library, so the number is repeated here.
inline constexpr int kPreemptedExitCode = 75;

// Installs the SIGUSR1 handler (SA_RESTART, so system calls in flight continue). Idempotent.
void InstallPreemptHandler();
// Whether this process got SIGUSR1 since the start (or the last ResetPreemptRequest).
bool PreemptRequested();
// How many SIGUSR1 this process got: a launcher forwards each new one to its ranks.
int PreemptRequestCount();
// Forgets earlier requests (tests).
void ResetPreemptRequest();

}  // namespace anneal::train
