#include "commands.h"

#include "uel/runtime/compute.h"

namespace uel::cli {

const comm::WorldInfo& start_ranks(int threads) {
  const comm::WorldInfo& world = comm::init_world(nullptr, nullptr);
  runtime::configure_compute(threads, world.local_size);
  return world;
}

}  // namespace uel::cli
