// anneal-data: a small host for the data subcommands (tokenize, data preview, data encode), used by the
// parity tests and benchmarks without building the LibTorch trainer. anneal-train registers the same
// commands through AddDataCommands.
#include <CLI/CLI.hpp>

#include "trainer/data/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"anneal-data: tokenizers, chat templates and datasets of the Anneal trainer"};
  app.require_subcommand(1);
  anneal::data::AddDataCommands(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
