#pragma once

// Preemption: SIGUSR1 (Slurm's --signal, scancel --signal, forwarded by mpirun) and SIGTERM
// (scancel, time limit, preemption) ask the run to stop at the next step boundary with a
// checkpoint, instead of ending the process.

namespace uel::runtime {

// Installs handlers for SIGUSR1 and SIGTERM that only record the signal (async-signal-safe).
void install_stop_signals();
// The first stop signal received (SIGUSR1 or SIGTERM), 0 if none.
int stop_signal();

}  // namespace uel::runtime
