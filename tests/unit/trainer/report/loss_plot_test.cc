// The loss plots (trainer/report/loss_plot.h): LLaMA-Factory's smoothing by hand, and real PNG files read back
// with cairo (size, the blue curves inside the plot area).
#include "trainer/report/loss_plot.h"

#include <cairo.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace anneal::report {
namespace {

namespace fs = std::filesystem;

class LossPlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("plot-" + std::to_string(::getpid()) + ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void WriteLog(const std::string& text) { std::ofstream(dir_ + "/trainer_log.jsonl") << text; }

  // Pixels of `png` that are clearly the curves' blue (#1f77b4, drawn at full or 40% opacity on white).
  static int BluePixels(const std::string& png, int* width, int* height) {
    cairo_surface_t* s = cairo_image_surface_create_from_png(png.c_str());
    EXPECT_EQ(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
    *width = cairo_image_surface_get_width(s);
    *height = cairo_image_surface_get_height(s);
    const unsigned char* data = cairo_image_surface_get_data(s);
    const int stride = cairo_image_surface_get_stride(s);
    int blue = 0;
    for (int y = 0; y < *height; ++y) {
      for (int x = 0; x < *width; ++x) {
        const unsigned char* px = data + y * stride + 4 * x;  // B, G, R (native little-endian ARGB32/RGB24)
        if (px[0] > px[2] + 60) ++blue;
      }
    }
    cairo_surface_destroy(s);
    return blue;
  }

  std::string dir_;
};

TEST(Smooth, IsLlamaFactorysSigmoidWeightedMovingAverage) {
  const std::vector<double> values = {4.0, 2.0, 3.0};
  const double w = 1.8 * (1 / (1 + std::exp(-0.05 * 3)) - 0.5);  // 0.0674...
  const double s0 = 4.0;
  const double s1 = s0 * w + (1 - w) * 2.0;
  const double s2 = s1 * w + (1 - w) * 3.0;
  const auto smoothed = Smooth(values);
  ASSERT_EQ(smoothed.size(), 3u);
  EXPECT_DOUBLE_EQ(smoothed[0], s0);
  EXPECT_DOUBLE_EQ(smoothed[1], s1);
  EXPECT_DOUBLE_EQ(smoothed[2], s2);
  EXPECT_NEAR(w, 0.06736, 1e-4);
  EXPECT_TRUE(Smooth({}).empty());
}

TEST_F(LossPlotTest, CurveIsA640By480PngWithTheBlueCurves) {
  Curve c;
  for (int s = 1; s <= 50; ++s) {
    c.steps.push_back(s);
    c.values.push_back(3.0 / s + 0.1 * std::sin(s));
  }
  const std::string png = dir_ + "/training_loss.png";
  ASSERT_TRUE(PlotCurve(png, "training loss of " + dir_, "loss", c).ok());
  std::ifstream in(png, std::ios::binary);
  std::string magic(8, '\0');
  in.read(magic.data(), 8);
  EXPECT_EQ(magic, "\x89PNG\r\n\x1a\n");
  int w = 0, h = 0;
  EXPECT_GT(BluePixels(png, &w, &h), 500);  // two curves across the plot, not a blank image
  EXPECT_EQ(w, 640);
  EXPECT_EQ(h, 480);
}

TEST_F(LossPlotTest, SinglePointAndFlatCurvesStillDraw) {
  int w = 0, h = 0;
  ASSERT_TRUE(PlotCurve(dir_ + "/one.png", "one", "loss", {{5}, {1.5}}).ok());
  EXPECT_GT(BluePixels(dir_ + "/one.png", &w, &h), 0);
  ASSERT_TRUE(PlotCurve(dir_ + "/flat.png", "flat", "loss", {{1, 2, 3}, {2.0, 2.0, 2.0}}).ok());
  EXPECT_GT(BluePixels(dir_ + "/flat.png", &w, &h), 100);
}

TEST_F(LossPlotTest, EmptyRaggedOrNonFiniteCurveIsRefused) {
  EXPECT_EQ(PlotCurve(dir_ + "/a.png", "t", "loss", {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PlotCurve(dir_ + "/b.png", "t", "loss", {{1, 2}, {1.0}}).code(), StatusCode::kInvalidArgument);
  const Status nan = PlotCurve(dir_ + "/c.png", "t", "loss", {{1, 2}, {1.0, std::nan("")}});
  EXPECT_EQ(nan.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(nan.message().find("not finite"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ + "/c.png"));
}

TEST_F(LossPlotTest, UnwritablePathIsAnErrorNamingIt) {
  const Status s = PlotCurve(dir_ + "/missing/dir/x.png", "t", "loss", {{1}, {1.0}});
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find(dir_ + "/missing/dir/x.png"), std::string::npos);
}

TEST_F(LossPlotTest, TrainerLogCurvesTakeTheEntriesHoldingTheKey) {
  WriteLog(R"({"current_steps": 2, "loss": 3.5, "lr": 0.001}
{"current_steps": 2, "eval_loss": 3.25}
{"current_steps": 4, "loss": 2.5}
)");
  auto loss = ReadTrainerLogCurve(dir_, "loss");
  ASSERT_TRUE(loss.ok());
  EXPECT_EQ(loss->steps, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(loss->values, (std::vector<double>{3.5, 2.5}));
  auto eval = ReadTrainerLogCurve(dir_, "eval_loss");
  ASSERT_TRUE(eval.ok());
  EXPECT_EQ(eval->steps, (std::vector<int64_t>{2}));
}

TEST_F(LossPlotTest, PlotTrainerLogWritesEvalPlotOnlyWithEvalLosses) {
  WriteLog("{\"current_steps\": 1, \"loss\": 3.0}\n{\"current_steps\": 2, \"loss\": 2.0}\n");
  auto written = PlotTrainerLog(dir_);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_EQ(*written, (std::vector<std::string>{dir_ + "/training_loss.png"}));
  EXPECT_FALSE(fs::exists(dir_ + "/training_eval_loss.png"));

  WriteLog("{\"current_steps\": 1, \"loss\": 3.0}\n{\"current_steps\": 1, \"eval_loss\": 2.0}\n");
  written = PlotTrainerLog(dir_);
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(written->size(), 2u);
  EXPECT_TRUE(fs::exists(dir_ + "/training_eval_loss.png"));
}

TEST_F(LossPlotTest, AMissingTrainerLogIsAnErrorNamingItAndTornLinesAreSkipped) {
  auto missing = PlotTrainerLog(dir_);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir_ + "/trainer_log.jsonl"), std::string::npos);

  // An attempt killed in the middle of a write leaves a torn line; the plot is drawn from the others.
  WriteLog(
      "{\"current_steps\": 1, \"loss\": 3.0}\n{\"current_st\n{\"current_steps\": 2, \"loss\": 2.0}\n"
      "{\"current_steps\": \"x\", \"loss\": 1.0}\n");
  auto curve = ReadTrainerLogCurve(dir_, "loss");
  ASSERT_TRUE(curve.ok()) << curve.status().ToString();
  EXPECT_EQ(curve->steps, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(curve->skipped_lines, 2);
  auto written = PlotTrainerLog(dir_);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_TRUE(fs::exists(dir_ + "/training_loss.png"));
}

}  // namespace
}  // namespace anneal::report
