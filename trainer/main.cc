// anneal-train: the trainer program (a standalone, torchrun-compatible process; docs/trainer-contract.md).
#include <iostream>

#include <CLI/CLI.hpp>

#include "common/version.h"
#include "trainer/cli/commands.h"
#include "trainer/data/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"anneal-train: LLaMA-family fine-tuning, evaluation and generation (LibTorch)"};
  app.set_version_flag("--version", std::string("anneal-train ") + anneal::Version());
  app.require_subcommand(1);
  anneal::trainer::AddModelCommands(app);
  anneal::trainer::AddTrainCommands(app);
  anneal::trainer::AddLaunchCommand(app);
  anneal::data::AddDataCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // LibTorch errors (c10::Error) end here: report, never crash.
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return anneal::trainer::ExitCode();
}
