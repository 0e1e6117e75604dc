// The C handle behind ms_model: a thin owner of the C++ Model so the runtime can reach it.
#pragma once

#include <memory>

#include "model/model.h"

struct ms_model {
    std::unique_ptr<ms::Model> model;
};
