// The reporting library of a trainer-only build that lacked Protobuf, Boost or cairo (trainer/report/CMakeLists.txt):
// the same interface, refusing with what the build lacked. MFU (mfu.cc) is built either way.
#include "trainer/report/loss_plot.h"
#include "trainer/report/tensorboard_writer.h"

namespace anneal::report {
namespace {

Status Unavailable(const std::string& what) {
  return FailedPreconditionError(what +
                                 " is not available in this anneal-train: it was built without Protobuf, "
                                 "Boost or cairo (run scripts/setup.sh and rebuild)");
}

}  // namespace

bool PlotsAvailable() {
  return false;
}

StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(const std::string&, int64_t) {
  return Unavailable("report_to: tensorboard");
}
TensorBoardWriter::~TensorBoardWriter() = default;
Status TensorBoardWriter::WriteRecord(const std::string&) {
  return Unavailable("report_to: tensorboard");
}
Status TensorBoardWriter::Add(int64_t, const Scalars&) {
  return Unavailable("report_to: tensorboard");
}
std::vector<std::string> EventFiles(const std::string&) {
  return {};
}

std::vector<double> Smooth(const std::vector<double>& values) {
  return values;
}
Status PlotCurve(const std::string&, const std::string&, const std::string&, const Curve&) {
  return Unavailable("plot_loss");
}
StatusOr<Curve> ReadTrainerLogCurve(const std::string&, const std::string&) {
  return Unavailable("plot_loss");
}
StatusOr<std::vector<std::string>> PlotTrainerLog(const std::string&) {
  return Unavailable("plot_loss");
}

}  // namespace anneal::report
