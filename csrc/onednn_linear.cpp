// oneDNN's fp32 linear layer with a weight packed once at load, for lote's Rust code.
//
// libtorch registers these operators in its `mkldnn` namespace (the ones torch.compile's CPU
// freezing uses); tch generates wrappers for the `aten` namespace only, so they are reached here
// through the dispatcher. Both take and return ordinary at::Tensor pointers as tch does (a
// `new at::Tensor` the caller owns), under shim.h's convention for errors.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "shim.h"

#include <optional>
#include <string>
#include <vector>

using lote_shim::guarded;

extern "C" {

// The weight `[out, in]` (fp32, CPU) in oneDNN's blocked layout for its linear kernel.
at::Tensor* lote_onednn_pack_linear(const at::Tensor* weight, char** error) {
  return guarded<at::Tensor>(error, [&] {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                         .typed<at::Tensor(const at::Tensor&, std::optional<int64_t>)>();
    return op.call(*weight, std::nullopt);
  });
}

// `input [..., in] W^T + bias` with a weight packed by lote_onednn_pack_linear; `bias` may be
// null. The result is a dense fp32 tensor `[..., out]`.
at::Tensor* lote_onednn_linear(const at::Tensor* input, const at::Tensor* packed,
                               const at::Tensor* bias, char** error) {
  return guarded<at::Tensor>(error, [&] {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                              std::string_view, c10::List<std::optional<at::Scalar>>,
                              std::optional<std::string_view>)>();
    std::optional<at::Tensor> b;
    if (bias != nullptr) b = *bias;
    return op.call(*input, *packed, b, "none", c10::List<std::optional<at::Scalar>>(),
                   std::nullopt);
  });
}

}  // extern "C"
