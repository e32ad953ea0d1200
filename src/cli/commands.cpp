#include "commands.h"

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "uel/core/error.h"
#include "uel/runtime/compute.h"

extern char** environ;

namespace uel::cli {

const comm::WorldInfo& start_ranks(int threads) {
  const comm::WorldInfo& world = comm::init_world(nullptr, nullptr);
  runtime::configure_compute(threads, world.local_size);
  return world;
}

int run_script(const char* env, const std::string& script, const std::vector<std::string>& args) {
  const char* from_env = std::getenv(env);
  const std::string path = from_env != nullptr ? from_env : script;
  UEL_CHECK_DATA(
      std::filesystem::is_regular_file(path),
      "the script '{}' is missing; set {} to {} of the uel sources",
      path,
      env,
      std::filesystem::path(script).filename().string());
  std::vector<std::string> argv = {"/usr/bin/python3", path};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> c_argv;
  for (std::string& a : argv)
    c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, c_argv[0], nullptr, nullptr, c_argv.data(), environ);
  UEL_CHECK_DATA(
      spawned == 0,
      "could not run {}: {}; apt-get install python3",
      c_argv[0],
      std::strerror(spawned));
  int status = 0;
  pid_t waited = 0;
  do {
    waited = waitpid(pid, &status, 0);
  } while (waited < 0 && errno == EINTR);
  UEL_CHECK(waited == pid, "waiting for {}: {}", path, std::strerror(errno));
  // The script's own exit status (its messages follow uel's: 2 arguments, 3 data).
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace uel::cli
