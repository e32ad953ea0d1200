#pragma once

#include <string>

namespace uel {

// "0.1.0 (git abc1234)"; the sha is taken at build time ("-dirty" when the tree had changes).
std::string version_string();
std::string git_sha();

}  // namespace uel
