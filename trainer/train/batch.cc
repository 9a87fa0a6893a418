#include "trainer/train/batch.h"

#include <ATen/ATen.h>

namespace anneal::train {
namespace {

// int32 [rows * seq_len] -> int64 [rows, seq_len]
at::Tensor Int64Matrix(const std::vector<int32_t>& v, int rows, int cols) {
  return at::from_blob(const_cast<int32_t*>(v.data()), {rows, cols}, at::kInt).to(at::kLong);
}

}  // namespace

Batch ToTensors(const data::Batch& b, bool packed, bool neat_packing) {
  Batch out;
  out.input_ids = Int64Matrix(b.input_ids, b.rows, b.seq_len);
  out.labels = Int64Matrix(b.labels, b.rows, b.seq_len);
  at::Tensor mask = Int64Matrix(b.attention_mask, b.rows, b.seq_len);
  if (packed) {
    out.position_ids = Int64Matrix(b.position_ids, b.rows, b.seq_len);
    if (neat_packing) out.segment_ids = Int64Matrix(b.segment_ids, b.rows, b.seq_len);
  }
  if (!packed || !neat_packing) out.attention_mask = mask;
  out.input_tokens = mask.sum().item<int64_t>();
  // Position t predicts t + 1, so the first column's label never counts.
  out.label_tokens = (out.labels.narrow(1, 1, std::max(0, b.seq_len - 1)) != -100).sum().item<int64_t>();
  return out;
}

Batch PadSequenceTo(Batch b, int64_t multiple, int64_t pad_id) {
  const int64_t T = b.input_ids.size(1);
  const int64_t extra = (multiple - T % multiple) % multiple;
  if (extra == 0) return b;
  auto pad = [&](const at::Tensor& t, int64_t value) {
    return t.defined() ? at::cat({t, at::full({t.size(0), extra}, value, t.options())}, 1) : t;
  };
  b.input_ids = pad(b.input_ids, pad_id);
  b.labels = pad(b.labels, -100);
  b.attention_mask = pad(b.attention_mask, 0);
  b.position_ids = pad(b.position_ids, 0);
  if (b.segment_ids.defined()) b.segment_ids = pad(b.segment_ids, b.segment_ids.max().item<int64_t>() + 1);
  return b;
}

}  // namespace anneal::train
