#include "lathe/nn/roles.hpp"

#include <fnmatch.h>

#include <map>
#include <stdexcept>

namespace lathe::nn {

std::vector<RoledParameter> roles_of(const torch::nn::Module& model) {
  std::map<std::string, Role> known;
  auto collect = [&](const torch::nn::Module& m, const std::string& prefix) {
    if (const auto* roled = dynamic_cast<const ParameterRoles*>(&m))
      for (const auto& [name, role] : roled->own_roles()) known[prefix + name] = role;
  };
  // The model itself without shared_from_this, so that a constructor may ask too.
  collect(model, "");
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false))
    collect(*item.value(), item.key() + ".");
  std::vector<RoledParameter> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    auto it = known.find(item.key());
    if (it == known.end()) throw std::logic_error("parameter '" + item.key() + "' was registered without a role");
    out.push_back({item.key(), item.value(), it->second});
  }
  return out;
}

bool selected(const RoledParameter& p, const std::vector<std::string>& patterns) {
  for (const auto& pattern : patterns) {
    if (parse_enum<Role>(pattern) == p.role) return true;
    if (::fnmatch(pattern.c_str(), p.name.c_str(), 0) == 0 || ::fnmatch((pattern + ".*").c_str(), p.name.c_str(), 0) == 0)
      return true;
  }
  return false;
}

}  // namespace lathe::nn
