// FlatShard: which elements of a parameter a data-parallel rank owns under ZeRO-2 (and, later, ZeRO-3): the
// parameter (this rank's tensor-parallel piece, flattened) is cut into `dp` equal chunks of ceil(numel / dp)
// elements, the last ones shorter or empty; rank r owns chunk r. Ownership is per parameter, as FSDP2 shards
// each parameter on its own, so it does not depend on how parameters are grouped into buckets: the two
// copies of a tied embedding on the first and last pipeline stages, and the copies of a replicated parameter on
// the tensor-parallel ranks, own the same range and can be summed slice to slice.
//
// A collective over a bucket of parameters lays them out rank-major: rank 0's chunks of every parameter (each
// padded to `chunk`), then rank 1's, and so on, so a reduce-scatter leaves each rank exactly its own chunks and
// an all-gather of the owned chunks rebuilds every parameter.
//
// Thread-safety: plain values.
//
// Example:
//   FlatShard s = FlatShard::Of(10, /*dp=*/4, /*rank=*/3);  // chunk 3, begin 9, end 10: one element
#pragma once

#include <algorithm>
#include <cstdint>

namespace anneal::parallel {

struct FlatShard {
  int64_t numel = 0;  // elements of the whole (tensor-parallel piece of the) parameter
  int64_t chunk = 0;  // elements per rank, padding included
  int64_t begin = 0;  // the owned range [begin, end) of the flattened parameter
  int64_t end = 0;

  int64_t owned() const { return end - begin; }
  static FlatShard Of(int64_t numel, int dp, int rank) {
    FlatShard s;
    s.numel = numel;
    s.chunk = dp <= 0 ? numel : (numel + dp - 1) / dp;
    s.begin = std::min(numel, static_cast<int64_t>(rank) * s.chunk);
    s.end = std::min(numel, s.begin + s.chunk);
    return s;
  }
};

}  // namespace anneal::parallel
