// The EASY reservation (coordinator/planner.h stage 4): the earliest time the first blocked job's gang fits,
// forecast from running jobs' expected ends, and the slots it will take, which later jobs may use only if
// they end before it.
#include <algorithm>
#include <climits>
#include <iterator>
#include <span>
#include <unordered_map>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator::planner_detail {

namespace {

struct Release {
  int64_t end_ms;  // 0: unknown (sorted last)
  std::span<const std::pair<uint32_t, uint32_t>> slots;
  uint32_t seq;  // ties: running jobs in input order, then the ones started in this pass
};

bool EndsBefore(const Release& a, const Release& b) {
  if ((a.end_ms == 0) != (b.end_ms == 0)) return b.end_ms == 0;
  if (a.end_ms != b.end_ms) return a.end_ms < b.end_ms;
  return a.seq < b.seq;
}

// Running jobs and the jobs started in this pass, by expected end (unknown last); freeing jobs end now. The
// running jobs' order is sorted once per pass (pass.running_by_end) and merged with what changed since.
std::vector<Release> ReleasesInOrder(PlannerPass& pass) {
  const int64_t now = pass.in.now_ms;
  auto end_of = [&](const RunningState& r) { return r.end_ms > 0 ? std::max(r.end_ms, now) : 0; };
  // EndsBefore's order as plain (end, seq) pairs, unknown ends as the largest: sorting thousands of running jobs
  // compares integers inline instead of calling EndsBefore.
  auto sort_key = [](int64_t end_ms) { return end_ms > 0 ? end_ms : INT64_MAX; };
  if (pass.running_by_end.empty() && !pass.running.empty()) {
    std::vector<std::pair<int64_t, uint32_t>> all;
    all.reserve(pass.running.size());
    for (uint32_t i = 0; i < pass.running.size(); ++i) all.emplace_back(sort_key(end_of(pass.running[i])), i);
    std::sort(all.begin(), all.end());
    pass.running_by_end.reserve(all.size());
    for (const auto& [key, seq] : all) pass.running_by_end.push_back(seq);
  }
  std::vector<Release> releases;
  releases.reserve(pass.running.size() + pass.started.size());
  for (uint32_t i = 0; i < pass.running.size(); ++i) {
    if (pass.running[i].freeing) releases.push_back({now, pass.running[i].slots, i});
  }
  std::vector<Release> rest;
  rest.reserve(pass.running.size());
  for (uint32_t i : pass.running_by_end) {
    const RunningState& r = pass.running[i];
    if (!r.freeing) rest.push_back({end_of(r), r.slots, i});
  }
  std::vector<std::pair<int64_t, uint32_t>> started_order;
  started_order.reserve(pass.started.size());
  for (uint32_t k = 0; k < pass.started.size(); ++k) started_order.emplace_back(sort_key(pass.started[k].end_ms), k);
  std::sort(started_order.begin(), started_order.end());
  std::vector<Release> started;
  started.reserve(pass.started.size());
  for (const auto& [key, k] : started_order) {
    started.push_back({pass.started[k].end_ms, pass.started[k].slots, static_cast<uint32_t>(pass.running.size() + k)});
  }
  std::merge(rest.begin(), rest.end(), started.begin(), started.end(), std::back_inserter(releases), EndsBefore);
  return releases;
}

}  // namespace

void Reserve(PlannerPass& pass, uint32_t job) {
  const PendingJob& pending = pass.in.pending[job];
  const View& view = pass.views[pass.jobs[job].view];
  const uint32_t per_node = pending.gang.ranks_per_node;
  const uint32_t wanted = pending.gang.nodes;
  auto member = [&](uint32_t node) { return view.members.empty() || view.members[node]; };

  // Nodes in the order they come to have `per_node` free slots: those that have them now (best fit), then as
  // running jobs end, soonest first.
  std::vector<uint32_t> ready;
  pass.real.WalkBestFit(view.index_view, per_node, [&](uint32_t node) {
    ready.push_back(node);
    return true;
  });
  std::vector<uint32_t> projected(pass.nodes.size());
  for (uint32_t node = 0; node < projected.size(); ++node) projected[node] = pass.real.Free(node);
  int64_t at = pass.in.now_ms;
  bool unknown = false;
  for (const Release& release : ReleasesInOrder(pass)) {
    // Once enough nodes are ready, still take the releases of the same moment: they are free then too.
    if (ready.size() >= wanted && (unknown || release.end_ms != at)) break;
    if (release.end_ms == 0) {
      unknown = true;
    } else {
      at = release.end_ms;
    }
    for (const auto& [node, count] : release.slots) {
      if (!member(node)) continue;
      const uint32_t before = projected[node];
      projected[node] += count;
      if (before < per_node && projected[node] >= per_node) ready.push_back(node);
    }
  }
  if (ready.size() < wanted) unknown = true;  // inconsistent input: slots held by nobody we know

  ReservationState reservation;
  reservation.pending = job;
  reservation.at_ms = unknown ? 0 : at;
  reservation.nodes.assign(ready.begin(), ready.begin() + std::min<size_t>(ready.size(), wanted));
  pass.spare.assign(pass.nodes.size(), UINT32_MAX);
  pass.guarded.emplace(pass.real);
  for (uint32_t node : reservation.nodes) {
    // What may run past the reservation here: the free slots it will not need when it starts.
    pass.spare[node] = std::min(pass.real.Free(node), projected[node] - std::min(projected[node], per_node));
    pass.guarded->Set(node, pass.spare[node]);
  }
  pass.reservation = std::move(reservation);
}

void EstimateStarts(PlannerPass& pass, const std::vector<uint32_t>& waiting, std::vector<int64_t>& estimate) {
  if (waiting.empty()) return;
  struct Shape {
    uint32_t view, nodes, per_node;
    int64_t at = -1;  // -1: not yet
  };
  std::vector<Shape> shapes;
  std::unordered_map<uint64_t, uint32_t> shape_of;
  std::vector<uint32_t> job_shape;
  job_shape.reserve(waiting.size());
  for (uint32_t job : waiting) {
    const auto& f = pass.jobs[job];
    const uint64_t key = (uint64_t{f.view} << 40) ^ (uint64_t{f.gang.nodes} << 20) ^ f.gang.ranks_per_node;
    // try_emplace: no map node is built for the thousands of jobs whose shape is known already.
    auto [it, inserted] = shape_of.try_emplace(key, static_cast<uint32_t>(shapes.size()));
    if (inserted) shapes.push_back({f.view, f.gang.nodes, f.gang.ranks_per_node});
    job_shape.push_back(it->second);
  }
  // at_least[v][r]: nodes of view v (dense over the views in use) with >= r slots projected free.
  std::vector<uint32_t> dense(pass.views.size(), UINT32_MAX);
  std::vector<uint32_t> used_views;
  for (const Shape& s : shapes) {
    if (dense[s.view] == UINT32_MAX) {
      dense[s.view] = static_cast<uint32_t>(used_views.size());
      used_views.push_back(s.view);
    }
  }
  const uint32_t top = pass.max_slots;
  std::vector<std::vector<uint32_t>> at_least(used_views.size(), std::vector<uint32_t>(top + 2, 0));
  for (size_t d = 0; d < used_views.size(); ++d) {
    for (uint32_t r = 1; r <= top; ++r) {
      at_least[d][r] = static_cast<uint32_t>(pass.real.CountAtLeast(pass.views[used_views[d]].index_view, r));
    }
  }
  size_t open = shapes.size();
  auto resolve = [&](int64_t when) {
    for (Shape& s : shapes) {
      if (s.at >= 0 || s.per_node > top || at_least[dense[s.view]][s.per_node] < s.nodes) continue;
      s.at = when;
      --open;
    }
  };
  resolve(pass.in.now_ms);
  std::vector<uint32_t> projected(pass.nodes.size());
  for (uint32_t node = 0; node < projected.size(); ++node) projected[node] = pass.real.Free(node);
  for (const Release& release : ReleasesInOrder(pass)) {
    if (open == 0 || release.end_ms == 0) break;  // past here the time is unknown: those stay 0
    for (const auto& [node, count] : release.slots) {
      const uint32_t before = std::min(projected[node], top);
      projected[node] += count;
      const uint32_t after = std::min(projected[node], top);
      for (size_t d = 0; d < used_views.size(); ++d) {
        const View& view = pass.views[used_views[d]];
        if (!view.members.empty() && !view.members[node]) continue;
        for (uint32_t r = before + 1; r <= after; ++r) ++at_least[d][r];
      }
    }
    resolve(release.end_ms);
  }
  for (size_t k = 0; k < waiting.size(); ++k) estimate[waiting[k]] = std::max<int64_t>(shapes[job_shape[k]].at, 0);
}

}  // namespace anneal::coordinator::planner_detail
