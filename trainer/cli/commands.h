// Subcommands of anneal-train. Each Add*Commands registers its subcommands on the app; the callbacks run the
// command and set the exit code through ExitCode().
//
// Exit codes: 0 success, 1 runtime failure (the message is printed on stderr), 2 usage / invalid input.
#pragma once

namespace CLI { class App; }

namespace anneal::trainer {

void AddModelCommands(CLI::App& app);     // generate, model init, model logits
void AddTrainCommands(CLI::App& app);     // train, eval, export
void AddLaunchCommand(CLI::App& app);     // launch
// Set by a subcommand callback; returned by main.
int& ExitCode();

}  // namespace anneal::trainer
