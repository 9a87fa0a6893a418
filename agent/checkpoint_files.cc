#include "agent/checkpoint_files.h"

#include <filesystem>

#include "common/durable_dirs.h"

namespace anneal::agent {

namespace fs = std::filesystem;

StatusOr<std::string> ResolveDeletablePath(const std::string& path, const std::string& output_dir) {
  return ResolvePathInsideOutputDir(path, output_dir, "delete");
}

StatusOr<std::string> ResolvePathInsideOutputDir(const std::string& path, const std::string& output_dir,
                                                 const std::string& verb) {
  const auto refuse = [&](const std::string& why) {
    return PermissionDeniedError("refusing to " + verb + " '" + path + "' (output directory '" + output_dir +
                                 "'): " + why);
  };
  if (path.empty() || output_dir.empty()) return refuse("empty path or output directory");
  const auto strip = [](std::string s) {
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    return s;
  };
  const fs::path p(strip(path));
  const fs::path out(strip(output_dir));
  if (!p.is_absolute() || !out.is_absolute()) return refuse("paths must be absolute");
  for (const auto& part : p) {
    if (part == "..") return refuse("the path contains '..'");
  }
  std::error_code ec;
  const fs::path real_out = fs::weakly_canonical(out, ec);
  if (ec) return refuse("cannot resolve the output directory: " + ec.message());
  if (real_out == real_out.root_path()) return refuse("the output directory is the filesystem root");
  const fs::path real = fs::weakly_canonical(p, ec);
  if (ec) return refuse("cannot resolve the path: " + ec.message());
  // Strictly inside: real_out is a proper prefix of real, component-wise.
  auto o = real_out.begin();
  auto r = real.begin();
  for (; o != real_out.end(); ++o, ++r) {
    if (r == real.end() || *o != *r)
      return refuse("it resolves to '" + real.string() + "', outside the output directory");
  }
  if (r == real.end()) return refuse("it is the output directory itself");
  return real.string();
}

Status DeleteCheckpointDir(const std::string& path, const std::string& output_dir) {
  ASSIGN_OR_RETURN(std::string real, ResolveDeletablePath(path, output_dir));
  // Marked (renamed to .deleting-<name>) before removal, so the trainer's listings never see a half-deleted
  // checkpoint; already gone is success.
  Status st = DeleteDirectoryMarked(real);
  if (!st.ok()) return Status(st.code(), "deleting checkpoint '" + real + "': " + st.message());
  return Status::Ok();
}

}  // namespace anneal::agent
