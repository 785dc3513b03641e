// A random generator of one's own per seeded generation, for lote's sampling.
//
// tch reaches only libtorch's process-wide default generator (`manual_seed`), which every model
// thread in the process draws from: two seeded requests on different models, or an unseeded one
// beside a seeded one, would disturb each other's stream. Here each seeded search holds a clone
// of the default generator of its device, seeded as `torch.manual_seed(seed)` seeds that one, so
// it draws exactly the numbers transformers draws after `set_seed(seed)`, and nobody else's.

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/Generator.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>

#include "shim.h"

using lote_shim::guarded;

extern "C" {

// A generator for `device` (-1: the CPU; n >= 0: CUDA device n, tch's numbering) in the state
// `manual_seed(seed)` leaves that device's default generator in.
at::Generator* lote_generator_new(int device, uint64_t seed, char** error) {
  return guarded<at::Generator>(error, [&] {
    if (device < -1) throw std::invalid_argument("no seeded generator for this device");
    const at::Device on = device == -1 ? at::Device(at::kCPU)
                                       : at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    at::Generator generator = at::globalContext().defaultGenerator(on).clone();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(seed);
    return generator;
  });
}

void lote_generator_free(at::Generator* generator) { delete generator; }

// `torch.multinomial(probs, samples, replacement=False, generator=...)`.
at::Tensor* lote_generator_multinomial(at::Generator* generator, const at::Tensor* probs,
                                       int64_t samples, char** error) {
  return guarded<at::Tensor>(error,
                             [&] { return at::multinomial(*probs, samples, false, *generator); });
}

}  // extern "C"
