#include "trainer/train/batch.h"

#include <algorithm>

#include <ATen/ATen.h>

namespace anneal::train {

Batch Collate(const std::vector<Row>& rows, int32_t pad_id, bool neat_packing) {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t T = 1;
  for (const Row& r : rows) T = std::max<int64_t>(T, static_cast<int64_t>(r.input_ids.size()));
  const bool packed = !rows.empty() && !rows[0].position_ids.empty();
  at::Tensor ids = at::full({B, T}, pad_id, at::kLong);
  at::Tensor labels = at::full({B, T}, -100, at::kLong);
  at::Tensor mask = at::zeros({B, T}, at::kLong);
  at::Tensor pos = at::zeros({B, T}, at::kLong);
  at::Tensor seg = at::zeros({B, T}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto lab_a = labels.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  auto pos_a = pos.accessor<int64_t, 2>();
  auto seg_a = seg.accessor<int64_t, 2>();
  Batch b;
  for (int64_t i = 0; i < B; ++i) {
    const Row& r = rows[i];
    for (size_t t = 0; t < r.input_ids.size(); ++t) {
      ids_a[i][t] = r.input_ids[t];
      lab_a[i][t] = r.labels[t];
      mask_a[i][t] = (!packed || r.segment_ids.empty() || r.segment_ids[t] != 0) ? 1 : 0;
      if (packed) {
        pos_a[i][t] = r.position_ids[t];
        if (!r.segment_ids.empty()) seg_a[i][t] = r.segment_ids[t];
        if (r.segment_ids.empty() || r.segment_ids[t] != 0) ++b.input_tokens;
      } else {
        ++b.input_tokens;
      }
    }
    // Label tokens after the shift: position t predicts t+1, so the first label never counts.
    for (size_t t = 1; t < r.labels.size(); ++t) b.label_tokens += r.labels[t] != -100;
  }
  b.input_ids = ids;
  b.labels = labels;
  if (packed) {
    b.position_ids = pos;
    if (neat_packing) b.segment_ids = seg;
    else b.attention_mask = mask;
  } else {
    b.attention_mask = mask;
  }
  return b;
}

}  // namespace anneal::train
