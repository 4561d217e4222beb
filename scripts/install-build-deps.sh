#!/usr/bin/env bash
# Debian/Ubuntu packages that building Triton's onnxruntime backend needs (`model-selector
# build-backend`): a C++ toolchain, CMake, RapidJSON headers and googletest sources (r24.10's
# `common` always configures its unit tests). Installs only what is missing.
set -euo pipefail

missing=()
for tool in cmake g++ make; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -f /usr/include/rapidjson/rapidjson.h ] || missing+=(rapidjson-dev)
[ -f /usr/src/googletest/CMakeLists.txt ] || missing+=(googletest)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "Install these packages (Debian names) with your system's package manager: ${missing[*]}" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "Not root and no sudo: run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} (apt-get)" >&2
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }
