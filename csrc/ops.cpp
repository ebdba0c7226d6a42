// Every deblur_ops schema lives here; backend files only add TORCH_LIBRARY_IMPL kernels.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import deblur_ops._C` loads this shared object, which runs the static registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "deblur_ops compiled kernels (registered as torch.ops.deblur_ops)",
      -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(deblur_ops, m) {
  // Paper 001: N Wiener filters of one image in one pass. image (B,C,*S) already padded,
  // psf (P,*k) with P in {1,B}, snr_db (N). Returns (B,N,C,*S).
  m.def("wiener_stack(Tensor image, Tensor psf, Tensor snr_db, str regularizer) -> Tensor");
  // Adjoint of the above (the forward is linear in image): grad (B,N,C,*S) -> (B,C,*S).
  m.def("wiener_stack_backward(Tensor grad, Tensor psf, Tensor snr_db, str regularizer) -> Tensor");
  // Paper 004 §3.2: piecewise-linear shrinkage; values (C,n_knots) on linspace(xmin, xmax, n_knots).
  m.def("learnable_shrink(Tensor x, Tensor values, float xmin, float xmax) -> Tensor");
  m.def(
      "learnable_shrink_backward(Tensor grad, Tensor x, Tensor values, float xmin, float xmax) "
      "-> (Tensor, Tensor)");
  // Paper 004 §2.2: non-uniform convolution with a filter bank. x (B,C,H,W), bank (F,kh,kw) odd,
  // idx/weights (B|1,K,H,W); mode "gather"|"scatter"; padding "zeros"|"reflect"|"replicate"|
  // "circular". Returns (B,C,H,W).
  m.def("nu_conv(Tensor x, Tensor bank, Tensor idx, Tensor weights, str mode, str padding) -> Tensor");
  // Gradients w.r.t. (x, bank, weights); entries not asked for in output_mask come back as zeros.
  m.def(
      "nu_conv_backward(Tensor grad, Tensor x, Tensor bank, Tensor idx, Tensor weights, str mode, "
      "str padding, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // Which loop nu_conv runs for these inputs: "runs", "pixels" or "filters" (see csrc/nu_conv.h).
  m.def(
      "nu_conv_path(Tensor x, Tensor bank, Tensor idx, Tensor weights, str mode, str padding) -> str");
  // Richardson-Lucy's two element-wise steps, each one pass over memory instead of two or three
  // (the iteration is otherwise four FFTs; see restore/richardson_lucy.py). In place, no autograd.
  // blurred <- observed / max(blurred + background, floor); all (B,C,*S), background optional.
  m.def(
      "richardson_lucy_ratio_(Tensor(a!) blurred, Tensor observed, Tensor? background, float floor) "
      "-> ()");
  // correction <- estimate * max(correction, 0) * factor; estimate (B,C,*S), factor (P,1,*S) with
  // P in {1,B} (optional: 1).
  m.def("richardson_lucy_update_(Tensor(a!) correction, Tensor estimate, Tensor? factor) -> ()");
}
