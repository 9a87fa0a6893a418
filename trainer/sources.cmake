# Trainer targets (included from trainer/CMakeLists.txt once LibTorch is found).
set(ANNEAL_TRAINER_SOURCES
  model/config.cc model/safetensors.cc model/safetensors_stream.cc model/linear.cc model/decoder.cc model/weights.cc model/generate.cc
  model/presets.cc model/rng.cc model/moe.cc model/mla.cc model/quant4.cc model/quant8.cc
  kernels/rmsnorm.cc
  optim/adamw.cc optim/schedule.cc
  parallel/dims.cc parallel/comm.cc parallel/tensor_parallel.cc parallel/sharding.cc
  train/finetune.cc train/batch.cc train/data_config.cc train/events.cc train/runtime.cc train/grad_reducer.cc train/pipeline.cc train/state_io.cc train/zero.cc train/rows.cc train/validator.cc train/metrics_logger.cc train/checkpointer.cc train/early_stopping.cc train/pair_stage.cc train/preference.cc train/reward.cc train/kto.cc train/expert_bias.cc train/file_gather.cc train/trainer.cc
  checkpoint/checkpoint.cc export/peft.cc export/merge.cc eval/eval.cc
  cli/model_commands.cc cli/train_commands.cc cli/launch_command.cc)
list(TRANSFORM ANNEAL_TRAINER_SOURCES PREPEND ${CMAKE_CURRENT_SOURCE_DIR}/)

add_library(anneal_trainer STATIC ${ANNEAL_TRAINER_SOURCES})
target_include_directories(anneal_trainer PUBLIC ${CMAKE_SOURCE_DIR})
find_package(OpenSSL REQUIRED)
target_link_libraries(anneal_trainer PUBLIC anneal_common_core anneal_jobspec anneal_data anneal_data_commands
                      anneal_safetensors_header anneal_trainer_preemption anneal_trainer_launcher_env anneal_report
                      ${TORCH_LIBRARIES} nlohmann_json::nlohmann_json CLI11::CLI11 OpenSSL::Crypto)
# libtorch.so exports its own copies of std::filesystem symbols, which crash when an executable binds to them.
# Put libstdc++ first among the needed libraries so the executable's references bind to the real ones.
target_link_options(anneal_trainer INTERFACE "LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
target_compile_options(anneal_trainer PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${ANNEAL_WARNINGS}>)
target_precompile_headers(anneal_trainer PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${CMAKE_CURRENT_SOURCE_DIR}/pch.h>)

if(ANNEAL_TRAINER_CUDA)
  add_library(anneal_kernels_cuda STATIC ${CMAKE_CURRENT_SOURCE_DIR}/kernels/rmsnorm_cuda.cu
              ${CMAKE_CURRENT_SOURCE_DIR}/kernels/dequant4_cuda.cu)
  target_include_directories(anneal_kernels_cuda PUBLIC ${CMAKE_SOURCE_DIR})
  set_target_properties(anneal_kernels_cuda PROPERTIES CUDA_ARCHITECTURES 90 CUDA_STANDARD 17
                        POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(anneal_kernels_cuda PUBLIC CUDA::cudart)
  target_link_libraries(anneal_trainer PUBLIC anneal_kernels_cuda)
  target_compile_definitions(anneal_trainer PUBLIC ANNEAL_WITH_CUDA=1)
endif()

add_executable(anneal-train ${CMAKE_CURRENT_SOURCE_DIR}/main.cc)
target_link_libraries(anneal-train PRIVATE anneal_trainer)
target_compile_options(anneal-train PRIVATE ${ANNEAL_WARNINGS})
