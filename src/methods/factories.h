#pragma once

// Each method's constructor and option check, for the factory in methods.cpp (private to
// src/methods).

#include <memory>

#include "uel/methods/method.h"

namespace uel::methods {

std::unique_ptr<Method> make_isif(const MethodConfig& config, const MethodSetup& setup);
void validate_isif(const MethodConfig& config);
std::unique_ptr<Method> make_nce(const MethodConfig& config, const MethodSetup& setup);
void validate_nce(const MethodConfig& config);
std::unique_ptr<Method> make_udml(const MethodConfig& config, const MethodSetup& setup);
void validate_udml(const MethodConfig& config);
std::unique_ptr<Method> make_margin(const MethodConfig& config, const MethodSetup& setup);
void validate_margin(const MethodConfig& config);

}  // namespace uel::methods
