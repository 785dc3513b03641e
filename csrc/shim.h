// The calling convention of lote's C++ shims (csrc/*.cpp): a C++ exception never crosses into
// Rust. Each call returns a `new` object the caller owns, or null with an error string
// (malloc'd, freed by the caller with lote_shim_free_error from shim.cpp).

#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>

namespace lote_shim {

inline char* copy_message(const char* message) {
  const size_t length = std::strlen(message);
  char* copy = static_cast<char*>(std::malloc(length + 1));
  if (copy != nullptr) std::memcpy(copy, message, length + 1);
  return copy;
}

// `new T(body())`, or null with the exception's message in `*error`.
template <typename T, typename F>
T* guarded(char** error, F&& body) {
  *error = nullptr;
  try {
    return new T(body());
  } catch (const std::exception& e) {
    *error = copy_message(e.what());
  } catch (...) {
    *error = copy_message("unknown C++ exception");
  }
  return nullptr;
}

}  // namespace lote_shim
