// The EASY reservation (coordinator/planner.h stage 4): the earliest time the first blocked job's gang fits,
// forecast from running jobs' expected ends, and the slots it will take, which later jobs may use only if
// they end before it.
#include <algorithm>
#include <climits>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator::planner_detail {

namespace {

struct Release {
  int64_t end_ms;  // 0: unknown (sorted last)
  const std::vector<std::pair<uint32_t, uint32_t>>* slots;
  uint32_t seq;  // ties: running jobs in input order, then the ones started in this pass
};

std::vector<Release> ReleasesInOrder(const PlannerPass& pass) {
  std::vector<Release> releases;
  releases.reserve(pass.running.size() + pass.started.size());
  const int64_t now = pass.in.now_ms;
  for (const auto& r : pass.running) {
    // A freeing job (being preempted, stopped, or chosen as a victim) ends about now.
    const int64_t end = r.freeing ? now : (r.end_ms > 0 ? std::max(r.end_ms, now) : 0);
    releases.push_back({end, &r.slots, static_cast<uint32_t>(releases.size())});
  }
  for (size_t i = 0; i < pass.started.size(); ++i) {
    releases.push_back({pass.started[i].end_ms, &pass.started[i].slots, static_cast<uint32_t>(releases.size())});
  }
  std::sort(releases.begin(), releases.end(), [](const Release& a, const Release& b) {
    if ((a.end_ms == 0) != (b.end_ms == 0)) return b.end_ms == 0;
    if (a.end_ms != b.end_ms) return a.end_ms < b.end_ms;
    return a.seq < b.seq;
  });
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
    for (const auto& [node, count] : *release.slots) {
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

}  // namespace anneal::coordinator::planner_detail
