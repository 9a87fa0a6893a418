// Precompiled header for the trainer: LibTorch's headers dominate compile time on small machines.
#pragma once
#include <torch/torch.h>
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
