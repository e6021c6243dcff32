// Operator schemas (namespace ganinv) and the empty Python module `ganinv_core._C` that carries them.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing ganinv_core._C runs the static registrations below; the module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "ganinv compiled ops (see torch.ops.ganinv)", -1,
                                   nullptr};
  return PyModule_Create(&def);
}
}

TORCH_LIBRARY(ganinv, m) {
  m.def("bias_act(Tensor x, Tensor b, int dim, int act, float alpha, float gain, float clamp) -> Tensor");
  m.def("bias_act_grad(Tensor g, Tensor x, Tensor b, int order, int dim, int act, float alpha, float gain, "
        "float clamp) -> Tensor");
  m.def("bias_act_backward(Tensor g, Tensor x, Tensor b, int dim, int act, float alpha, float gain, float clamp) "
        "-> (Tensor, Tensor)");
  m.def("upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, int padx1, int pady0, "
        "int pady1, bool flip, float gain) -> Tensor");
  m.def("modconv_epilogue(Tensor c, Tensor d, Tensor noise, Tensor b, Tensor e, int act, float alpha, float gain, "
        "float clamp) -> Tensor");
  m.def("modconv_epilogue_backward(Tensor gy, Tensor c, Tensor d, Tensor noise, Tensor b, Tensor e, Tensor gr, "
        "Tensor wr, int act, float alpha, float gain, float clamp) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("lpips_distance(Tensor f, Tensor t, Tensor g, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("lpips_distance_backward(Tensor gdist, Tensor f, Tensor t, Tensor g, Tensor norm, Tensor s, float eps) "
        "-> Tensor");
  m.def("noise_autocorr(Tensor x) -> Tensor");
  m.def("noise_autocorr_backward(Tensor ga, Tensor x) -> Tensor");
  // Test hook: a fresh tensor like x that no kernel writes (maybe_poison only): the tests check that
  // GANINV_DEBUG_POISON makes such an output fail their "no NaN" checks.
  m.def("_unwritten_like(Tensor x) -> Tensor");
}
