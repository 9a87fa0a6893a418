// Fuzz target: job spec YAML (jobspec/jobspec.h). Input: the YAML text. ParseJobSpec (parse + validate); an
// accepted spec must survive ToYaml -> ParseJobSpec unchanged (warnings aside) and CheckFitsCluster.
#include <cstdint>
#include <string>
#include <string_view>

#include "bench/fuzz/fuzz_support.h"
#include "jobspec/jobspec.h"

using anneal::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = anneal::jobspec::ParseJobSpec(text, "fuzz.yaml");
  if (!spec.ok()) {
    FuzzCheck(!spec.status().message().empty(), "a refused spec has an error message");
    return 0;
  }
  spec->warnings.clear();
  const std::string yaml = anneal::jobspec::ToYaml(*spec);
  auto again = anneal::jobspec::ParseJobSpec(yaml, "fuzz-roundtrip.yaml");
  if (!again.ok()) anneal::fuzz::FuzzFail("ToYaml of an accepted spec does not parse: " + again.status().ToString());
  again->warnings.clear();
  FuzzCheck(*again == *spec, "ParseJobSpec(ToYaml(spec)) == spec");
  FuzzCheck(anneal::jobspec::ToYaml(*again) == yaml, "ToYaml is stable over a round trip");
  (void)anneal::jobspec::CheckFitsCluster(*spec, {.node_count = 2, .max_slots_per_node = 8, .total_slots = 16});
  return 0;
}
