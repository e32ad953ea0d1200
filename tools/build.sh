#!/usr/bin/env bash
# Configures and builds uel into build/ (Release). Extra arguments go to cmake's configure step;
# UEL_BUILD_TARGET=uel builds the program alone (the demo), without the test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)" ${UEL_BUILD_TARGET:+--target "$UEL_BUILD_TARGET"}
