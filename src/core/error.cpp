#include "uel/core/error.h"

#include <cstring>

namespace uel::detail {

std::string check_location(const char* file, int line, const char* expression) {
  // Keep the path short: the part after src/ or include/ identifies the file.
  const char* short_file = file;
  for (const char* marker : {"/src/", "/include/", "/tests/"}) {
    if (const char* p = std::strstr(file, marker)) {
      short_file = p + 1;
      break;
    }
  }
  return fmt::format("{}:{}: check '{}' failed", short_file, line, expression);
}

}  // namespace uel::detail
