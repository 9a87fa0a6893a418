// IdentityRegistry::SetTeamQuota: a team's fair-share weight and its quotas per pool (coordinator/identity.h
// states the contract; coordinator/sharing.h defines pools).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "coordinator/identity.h"
#include "coordinator/sharing.h"

namespace anneal::coordinator {

namespace {

Status CheckQuotaEntry(const std::string& team, const pb::TeamQuota& quota) {
  RETURN_IF_ERROR(ValidatePoolLabel(quota.label()).WithContext(fmt::format("team '{}' quota", team)));
  if (quota.max() != 0 && quota.max() < quota.guaranteed()) {
    return InvalidArgumentError(fmt::format(
        "team '{}' quota on {}: max {} is below guaranteed {}: max is what the team may hold there, borrowing "
        "included (0: no limit), so it must be at least the guarantee",
        team, PoolName(quota.label()), quota.max(), quota.guaranteed()));
  }
  return Status::Ok();
}

uint32_t GuaranteeOn(const pb::TeamRecord& team, const std::string& label) {
  for (const auto& q : team.quotas()) {
    if (q.label() == label) return q.guaranteed();
  }
  return 0;
}

}  // namespace

StatusOr<pb::TeamRecord> IdentityRegistry::SetTeamQuota(const pb::SetTeamQuotaRequest& request,
                                                        const std::map<std::string, uint64_t>& pool_slots) {
  const std::string& name = request.team();
  RETURN_IF_ERROR(ValidateIdentityName("team", name));
  if (request.quotas_size() > static_cast<int>(kMaxQuotasPerTeam)) {
    return InvalidArgumentError(
        fmt::format("team '{}': {} quota entries in one request, above the limit of {} per team", name,
                    request.quotas_size(), kMaxQuotasPerTeam));
  }
  auto found = teams_.find(name);
  if (found == teams_.end()) return NotFoundError(fmt::format("no team '{}' (anneal team ls lists them)", name));
  const double weight = request.weight();
  if (!std::isfinite(weight) || weight < 0 || weight > kMaxTeamWeight) {
    return InvalidArgumentError(
        fmt::format("team '{}': weight {} is not valid: expected a number above 0 and at most "
                    "{} (a team's share is its weight over the sum of the weights)",
                    name, weight, kMaxTeamWeight));
  }
  pb::TeamRecord changed = found->second;
  if (weight > 0) changed.set_weight(weight);

  std::set<std::string> seen;
  for (const auto& quota : request.quotas()) {
    RETURN_IF_ERROR(CheckQuotaEntry(name, quota));
    if (!seen.insert(quota.label()).second) {
      return InvalidArgumentError(fmt::format("team '{}': {} is given twice in one request; give each label once", name,
                                              PoolName(quota.label())));
    }
    auto* entries = changed.mutable_quotas();
    auto same =
        std::find_if(entries->begin(), entries->end(), [&](const auto& q) { return q.label() == quota.label(); });
    if (same != entries->end()) entries->erase(same);
    if (quota.guaranteed() != 0 || quota.max() != 0) *changed.add_quotas() = quota;
  }
  if (changed.quotas_size() > static_cast<int>(kMaxQuotasPerTeam)) {
    return InvalidArgumentError(fmt::format("team '{}' would have {} quota entries, above the limit of {} per team",
                                            name, changed.quotas_size(), kMaxQuotasPerTeam));
  }
  std::sort(changed.mutable_quotas()->begin(), changed.mutable_quotas()->end(),
            [](const auto& a, const auto& b) { return a.label() < b.label(); });

  // Guarantees are promises backed by preemption: they may never add up to more than the pool has.
  for (const std::string& label : seen) {
    const uint32_t wanted = GuaranteeOn(changed, label);
    if (wanted <= GuaranteeOn(found->second, label)) continue;  // lowering (or keeping) is always allowed
    uint64_t sum = wanted;
    for (const auto& [other_name, other] : teams_) {
      if (other_name != name) sum += GuaranteeOn(other, label);
    }
    auto capacity = pool_slots.find(label);
    const uint64_t slots = capacity == pool_slots.end() ? 0 : capacity->second;
    if (sum > slots) {
      return FailedPreconditionError(fmt::format(
          "team '{}' guaranteed {} slots on {}: the guarantees of all teams there would add up to {} slots, above "
          "the {} slots of its registered nodes; lower a guarantee or add nodes",
          name, wanted, PoolName(label), sum, slots));
    }
  }
  teams_[name] = changed;
  batch_->Put(storage::Table::kTeams, name, changed);
  return changed;
}

}  // namespace anneal::coordinator
