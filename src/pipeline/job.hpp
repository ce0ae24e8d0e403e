// The communicator of a data-parallel job, for the stages whose work every rank shares.
#pragma once

#include <memory>

#include "lathe/dist/communicator.hpp"
#include "lathe/recipe/recipe.hpp"

namespace lathe::pipeline {

/// The world communicator when a launcher (mpirun, torchrun, srun) started this process as one
/// of several ranks (or distributed.backend names one); null for a process on its own.
std::shared_ptr<dist::Communicator> job_communicator(const recipe::Recipe& recipe);

}  // namespace lathe::pipeline
