// The one precompiled header of lathe: the LibTorch headers every area uses. Sources still
// include the narrow headers they need; with the PCH in place those includes cost nothing.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules.h>
#include <torch/optim.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>
