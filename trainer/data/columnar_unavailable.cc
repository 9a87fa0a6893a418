// ReadColumnarFile in a build without Apache Arrow C++: a trainer-only build (ANNEAL_TRAINER_ONLY, e.g.
// scripts/device-build.sh on a GPU machine) whose python has no pyarrow. JSON and JSONL datasets work as ever;
// a csv / parquet / arrow file is refused with what to do, never read wrongly. Regular builds require Arrow
// (trainer/data/CMakeLists.txt) and compile columnar.cc instead.
#include <fmt/format.h>

#include "trainer/data/columnar.h"

namespace anneal::data {

bool IsColumnarExtension(const std::string& e) {
  return e == ".csv" || e == ".parquet" || e == ".arrow";
}

namespace {
Status NoArrow(const std::string& path) {
  return FailedPreconditionError(fmt::format(
      "{}: this anneal-train was built without Apache Arrow C++ (its python had no pyarrow at build time), so it "
      "cannot read csv, parquet or arrow files: convert the dataset to .json / .jsonl, or rebuild after "
      "`pip install pyarrow` (scripts/requirements.txt pins it)",
      path));
}
}  // namespace

StatusOr<std::vector<nlohmann::json>> ReadColumnarFile(const std::string& path) {
  return NoArrow(path);
}

StatusOr<std::unique_ptr<ColumnarBatchReader>> OpenColumnarBatches(const std::string& path) {
  return NoArrow(path);
}

}  // namespace anneal::data
