// Every operator schema of pynas, in one place. Backends register their
// implementations with TORCH_LIBRARY_IMPL in csrc/cpu/ and csrc/cuda/; the
// Python side (pynas/ops/_registration.py) adds fake kernels and autograd.
#include <torch/library.h>

TORCH_LIBRARY(pynas, m) {
  // sum_k weights[..., k] * xs[k]; weights is [K] or [N, K] (per sample).
  m.def("weighted_sum(Tensor[] xs, Tensor weights) -> Tensor");
  // Returns the gradients of the xs whose flag is set (in order) and the
  // gradient of weights (an empty tensor when weights_need_grad is false).
  m.def(
      "_weighted_sum_backward(Tensor grad, Tensor[] xs, Tensor weights, "
      "bool[] xs_need_grad, bool weights_need_grad) -> (Tensor[], Tensor)");

  // PC-DARTS: channel_shuffle(cat([weighted_sum(ys, weights), x[:, C//groups:]], 1), groups).
  m.def("partial_channel_mix(Tensor[] ys, Tensor weights, Tensor x, int groups) -> Tensor");
  // Returns (grads of flagged ys, grad of weights or empty, grad of x or empty).
  m.def(
      "_partial_channel_mix_backward(Tensor grad, Tensor[] ys, Tensor weights, int groups, "
      "bool[] ys_need_grad, bool weights_need_grad, bool x_need_grad) -> (Tensor[], Tensor, Tensor)");

  // Single-path gathering. path_dispatch and path_combine are each other's
  // adjoint, so each one's backward is the other op.
  m.def("path_dispatch(Tensor x, Tensor choices, int num_choices) -> Tensor[]");
  m.def("path_combine(Tensor[] ys, Tensor choices, Tensor? residual=None) -> Tensor");

  // Batch norm with statistics per group of samples. With mean and var given
  // it normalizes with them (evaluation); otherwise with the batch statistics
  // of each group. Returns (out, mean [G, C], invstd [G, C]).
  m.def(
      "grouped_batch_norm(Tensor x, Tensor groups, int num_groups, Tensor? weight, "
      "Tensor? bias, Tensor? mean, Tensor? var, float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_grouped_batch_norm_backward(Tensor grad, Tensor x, Tensor groups, int num_groups, "
      "Tensor? weight, Tensor mean, Tensor invstd, bool batch_stats, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");
}
