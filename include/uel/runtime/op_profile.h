#pragma once

// Where a step's time goes, operator by operator: LibTorch's RecordFunction callbacks on the
// thread that starts the profile (and the autograd work it runs there), summed per operator name
// as self time, an op's time less that of the ops it called (aten::conv2d's time is mostly
// aten::mkldnn_convolution's), so the rows add up to the time spent inside ops. What runs
// between ops (collectives, the loader's hand-over, the optimizer's loop) is the rest of the step.

#include <cstdint>
#include <string>
#include <vector>

namespace uel::runtime {

struct OpTime {
  std::string name;
  int64_t calls = 0;
  double self_seconds = 0;
};

// Records while it lives; one at a time per process.
class OpProfile {
 public:
  OpProfile();
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  // Every operator seen so far, largest self time first.
  std::vector<OpTime> ops() const;
  // Time inside outermost ops: the sum of the self times.
  double inside_seconds() const;

 private:
  uint64_t handle_;
};

}  // namespace uel::runtime
