#!/usr/bin/env bash
# The main job in one command on a fresh machine: installs Deno, OpenBLAS (the CPU backend) and the
# software Vulkan driver when missing, then runs the whole pipeline on the built-in corpus
# (`deno task demo`; a GPU when there is one, else the CPU backend; outputs in runs/demo/). Extra
# arguments go to `cli.ts demo`.
set -uo pipefail
cd "$(dirname "$0")"
# shellcheck source=.ci/setup
source .ci/setup --no-browser || exit 1
exec deno run -A cli.ts demo "$@"
