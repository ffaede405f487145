// Fused CPU kernels of DY-ReLU's piecewise maximum y = s * max_k(a_k x + b_k) and its backward.
//
// One pass over x for the forward and one pass over (x, grad) for the backward, where the ATen
// sequence in dyrelu/functional.py needs three to eight. Built on first use by dyrelu/_native and
// registered as torch.ops.dyrelu_native.{forward,backward}.
//
// Layouts (chosen by the caller): "planes" is x viewed as (N, C, S) contiguous (channels-first),
// "rows" is x viewed as (N, S, C) contiguous (channels-last, tokens, (N, C) input).
// Coefficients come as contiguous (K, Na, Ca) with Na in {1, N} and Ca in {1, C}; the optional
// scale as contiguous (N, S). Ties go to the later piece (the ReLU configuration has gradient 0 at
// x == 0, as torch.relu); where a comparison is NaN the earlier piece keeps the gradient, and the
// forward propagates NaN like torch.maximum.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kMaxPieces = 8;
constexpr int64_t kGrainElements = 1 << 15;

struct Shape {
  int64_t n, c, s, k;
  int64_t na, ca;  // coefficient rows (1 or n) and columns (1 or c)
};

Shape check(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, const c10::optional<at::Tensor>& scale,
            bool rows) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "dyrelu_native: expected a contiguous 3-d input, got ", x.sizes());
  TORCH_CHECK(a.dim() == 3 && a.is_contiguous() && b.sizes() == a.sizes() && b.is_contiguous(),
              "dyrelu_native: expected contiguous (K, N or 1, C or 1) coefficients, got ", a.sizes(), " and ",
              b.sizes());
  TORCH_CHECK(a.scalar_type() == x.scalar_type() && b.scalar_type() == x.scalar_type(),
              "dyrelu_native: coefficients must have the input's dtype");
  Shape sh;
  sh.n = x.size(0);
  sh.c = rows ? x.size(2) : x.size(1);
  sh.s = rows ? x.size(1) : x.size(2);
  sh.k = a.size(0);
  sh.na = a.size(1);
  sh.ca = a.size(2);
  TORCH_CHECK(sh.k >= 1 && sh.k <= kMaxPieces, "dyrelu_native: expected 1 to ", kMaxPieces, " pieces, got ", sh.k);
  TORCH_CHECK(sh.na == 1 || sh.na == sh.n, "dyrelu_native: coefficient rows ", sh.na, " for batch ", sh.n);
  TORCH_CHECK(sh.ca == 1 || sh.ca == sh.c, "dyrelu_native: coefficient columns ", sh.ca, " for channels ", sh.c);
  if (scale.has_value()) {
    TORCH_CHECK(scale->is_contiguous() && scale->numel() == sh.n * sh.s && scale->scalar_type() == x.scalar_type(),
                "dyrelu_native: expected a contiguous (N, S) scale of the input's dtype, got ", scale->sizes());
  }
  return sh;
}

// Offset of coefficient (piece k, sample n, channel c) in a contiguous (K, Na, Ca) tensor.
inline int64_t coef(const Shape& sh, int64_t k, int64_t n, int64_t c) {
  return (k * sh.na + (sh.na > 1 ? n : 0)) * sh.ca + (sh.ca > 1 ? c : 0);
}

inline int64_t grain(int64_t per_item) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, per_item)); }

// ---- forward --------------------------------------------------------------------------------------

template <typename T>
void forward_planes(const T* x, const T* a, const T* b, const T* scale, T* y, const Shape& sh) {
  at::parallel_for(0, sh.n * sh.c, grain(sh.s), [&](int64_t begin, int64_t end) {
    T ak[kMaxPieces], bk[kMaxPieces];
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / sh.c, c = p % sh.c;
      for (int64_t k = 0; k < sh.k; ++k) {
        ak[k] = a[coef(sh, k, n, c)];
        bk[k] = b[coef(sh, k, n, c)];
      }
      const T* xp = x + p * sh.s;
      T* yp = y + p * sh.s;
      const T* sp = scale ? scale + n * sh.s : nullptr;
      if (sh.k == 2) {
        const T a0 = ak[0], b0 = bk[0], a1 = ak[1], b1 = bk[1];
#pragma omp simd
        for (int64_t i = 0; i < sh.s; ++i) {
          const T z0 = a0 * xp[i] + b0, z1 = a1 * xp[i] + b1;
          yp[i] = (z1 >= z0 || z1 != z1) ? z1 : z0;
        }
      } else {
        for (int64_t i = 0; i < sh.s; ++i) {
          T best = ak[0] * xp[i] + bk[0];
          for (int64_t k = 1; k < sh.k; ++k) {
            const T z = ak[k] * xp[i] + bk[k];
            best = (z >= best || z != z) ? z : best;
          }
          yp[i] = best;
        }
      }
      if (sp) {
#pragma omp simd
        for (int64_t i = 0; i < sh.s; ++i) yp[i] *= sp[i];
      }
    }
  });
}

// K = 2, one row of channels; kShared: one coefficient for all channels (DY-ReLU-A).
template <typename T, bool kShared>
void forward_row2(const T* __restrict xr, const T* a0, const T* b0, const T* a1, const T* b1, T* __restrict yr,
                  int64_t channels) {
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t j = kShared ? 0 : c;
    const T z0 = a0[j] * xr[c] + b0[j], z1 = a1[j] * xr[c] + b1[j];
    yr[c] = (z1 >= z0 || z1 != z1) ? z1 : z0;
  }
}

template <typename T>
void forward_rows(const T* x, const T* a, const T* b, const T* scale, T* y, const Shape& sh) {
  const int64_t cs = sh.ca > 1 ? 1 : 0;  // stride of the coefficients along the channels
  const int64_t piece = sh.na * sh.ca;   // distance between pieces
  at::parallel_for(0, sh.n * sh.s, grain(sh.c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / sh.s;
      const T* xr = x + r * sh.c;
      T* yr = y + r * sh.c;
      const T* a0 = a + coef(sh, 0, n, 0);
      const T* b0 = b + coef(sh, 0, n, 0);
      if (sh.k == 2) {
        auto row = cs ? forward_row2<T, false> : forward_row2<T, true>;
        row(xr, a0, b0, a0 + piece, b0 + piece, yr, sh.c);
      } else {
        for (int64_t c = 0; c < sh.c; ++c) {
          T best = a0[c * cs] * xr[c] + b0[c * cs];
          for (int64_t k = 1; k < sh.k; ++k) {
            const T z = a0[k * piece + c * cs] * xr[c] + b0[k * piece + c * cs];
            best = (z >= best || z != z) ? z : best;
          }
          yr[c] = best;
        }
      }
      if (scale) {
        const T s = scale[r];
#pragma omp simd
        for (int64_t c = 0; c < sh.c; ++c) yr[c] *= s;
      }
    }
  });
}

void check_out(const at::Tensor& out, const at::Tensor& x, const char* what) {
  TORCH_CHECK(out.sizes() == x.sizes() && out.is_contiguous() && out.scalar_type() == x.scalar_type(),
              "dyrelu_native: expected ", what, " to be a contiguous tensor like the input, got ", out.sizes());
}

// Writes into `out` (a view the caller made of a tensor in the input's layout: returning that tensor
// itself, not a view, lets autograd add later gradients into it in place).
void forward(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, const c10::optional<at::Tensor>& scale,
             bool rows, const at::Tensor& out) {
  const Shape sh = check(x, a, b, scale, rows);
  check_out(out, x, "out");
  const at::Tensor& y = out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dyrelu_native_forward", [&] {
    const scalar_t* sp = scale.has_value() ? scale->const_data_ptr<scalar_t>() : nullptr;
    if (rows) {
      forward_rows<scalar_t>(x.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                             sp, y.mutable_data_ptr<scalar_t>(), sh);
    } else {
      forward_planes<scalar_t>(x.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
                               b.const_data_ptr<scalar_t>(), sp, y.mutable_data_ptr<scalar_t>(), sh);
    }
  });
}

// ---- backward -------------------------------------------------------------------------------------
//
// Per element, with k the active piece, z = a_k x + b_k and gz = grad * scale:
//   grad_x = gz * a_k;  sums[2k] += gz and sums[2k+1] += gz * x per (sample, channel);
//   grad_scale[n, s] = sum over channels of grad * z.
// sums is (2K, N, C): the caller reduces it to the coefficients' shape.

// K = 2, one plane: branch-free, so that the compiler vectorises it; the flags are compile-time so the
// loop carries no optional work.
template <typename T, bool kScale, bool kGx, bool kGsc>
void backward_plane2(const T* __restrict g, const T* __restrict x, const T* __restrict sp, T* __restrict gx,
                     T* __restrict gsc, const T* ak, const T* bk, int64_t s, T* sums) {
  const T a0 = ak[0], b0 = bk[0], a1 = ak[1], b1 = bk[1];
  T g1 = 0, gx1 = 0, gall = 0, gxall = 0;
#pragma omp simd reduction(+ : g1, gx1, gall, gxall)
  for (int64_t i = 0; i < s; ++i) {
    const T xi = x[i];
    const T z0 = a0 * xi + b0, z1 = a1 * xi + b1;
    const bool later = z1 >= z0;
    const T gz = kScale ? g[i] * sp[i] : g[i];
    const T m = later ? T(1) : T(0);
    if constexpr (kGx) gx[i] = gz * (later ? a1 : a0);
    if constexpr (kGsc) gsc[i] += g[i] * (later ? z1 : z0);
    gall += gz;
    gxall += gz * xi;
    g1 += m * gz;
    gx1 += m * gz * xi;
  }
  sums[0] = gall - g1;
  sums[1] = gxall - gx1;
  sums[2] = g1;
  sums[3] = gx1;
}

// Any K, one plane: the active piece by a scan (ties to the later piece).
template <typename T>
void backward_plane_k(const T* g, const T* x, const T* sp, T* gx, T* gsc, const T* ak, const T* bk, int64_t k_count,
                      int64_t s, T* sums) {
  T acc[2 * kMaxPieces] = {};
  for (int64_t i = 0; i < s; ++i) {
    const T xi = x[i];
    T best = ak[0] * xi + bk[0];
    int64_t idx = 0;
    for (int64_t k = 1; k < k_count; ++k) {
      const T z = ak[k] * xi + bk[k];
      if (z >= best) {
        best = z;
        idx = k;
      }
    }
    const T gz = sp ? g[i] * sp[i] : g[i];
    if (gx) gx[i] = gz * ak[idx];
    if (gsc) gsc[i] += g[i] * best;
    acc[2 * idx] += gz;
    acc[2 * idx + 1] += gz * xi;
  }
  std::copy(acc, acc + 2 * k_count, sums);
}

template <typename T>
void backward_plane(const T* g, const T* x, const T* sp, T* gx, T* gsc, const T* ak, const T* bk, int64_t k_count,
                    int64_t s, T* sums) {
  if (k_count != 2) return backward_plane_k<T>(g, x, sp, gx, gsc, ak, bk, k_count, s, sums);
  const int flags = (sp ? 4 : 0) | (gx ? 2 : 0) | (gsc ? 1 : 0);
  switch (flags) {
    case 0: return backward_plane2<T, false, false, false>(g, x, sp, gx, gsc, ak, bk, s, sums);
    case 1: return backward_plane2<T, false, false, true>(g, x, sp, gx, gsc, ak, bk, s, sums);
    case 2: return backward_plane2<T, false, true, false>(g, x, sp, gx, gsc, ak, bk, s, sums);
    case 3: return backward_plane2<T, false, true, true>(g, x, sp, gx, gsc, ak, bk, s, sums);
    case 4: return backward_plane2<T, true, false, false>(g, x, sp, gx, gsc, ak, bk, s, sums);
    case 5: return backward_plane2<T, true, false, true>(g, x, sp, gx, gsc, ak, bk, s, sums);
    case 6: return backward_plane2<T, true, true, false>(g, x, sp, gx, gsc, ak, bk, s, sums);
    default: return backward_plane2<T, true, true, true>(g, x, sp, gx, gsc, ak, bk, s, sums);
  }
}

template <typename T>
void backward_planes(const T* g, const T* x, const T* a, const T* b, const T* scale, T* gx, T* sums, T* gsc,
                     const Shape& sh) {
  // With a scale gradient, channels of one sample add into the same positions: one task per sample.
  const int64_t items = gsc ? sh.n : sh.n * sh.c;
  const int64_t per_item = gsc ? sh.c * sh.s : sh.s;
  const int64_t plane_count = sh.n * sh.c;
  at::parallel_for(0, items, grain(per_item), [&](int64_t begin, int64_t end) {
    T ak[kMaxPieces], bk[kMaxPieces], local[2 * kMaxPieces];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t first = gsc ? item * sh.c : item, last = gsc ? first + sh.c : first + 1;
      for (int64_t p = first; p < last; ++p) {
        const int64_t n = p / sh.c, c = p % sh.c;
        for (int64_t k = 0; k < sh.k; ++k) {
          ak[k] = a[coef(sh, k, n, c)];
          bk[k] = b[coef(sh, k, n, c)];
        }
        backward_plane<T>(g + p * sh.s, x + p * sh.s, scale ? scale + n * sh.s : nullptr, gx ? gx + p * sh.s : nullptr,
                          gsc ? gsc + n * sh.s : nullptr, ak, bk, sh.k, sh.s, local);
        for (int64_t j = 0; j < 2 * sh.k; ++j) sums[j * plane_count + p] = local[j];
      }
    }
  });
}

// K = 2, one row of channels: accumulates the per-channel sums into acc (2K rows of C) and returns the
// row's sum of grad * z (the scale gradient of this position).
template <typename T, bool kGx, bool kShared>
T backward_row2(const T* __restrict xr, const T* __restrict gr, T sv, const T* a0, const T* b0, const T* a1,
                const T* b1, T* __restrict gxr, T* __restrict acc, int64_t channels) {
  T* __restrict g0 = acc;
  T* __restrict gx0 = acc + channels;
  T* __restrict g1 = acc + 2 * channels;
  T* __restrict gx1 = acc + 3 * channels;
  T zsum = 0;
#pragma omp simd reduction(+ : zsum)
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t j = kShared ? 0 : c;
    const T xi = xr[c];
    const T z0 = a0[j] * xi + b0[j], z1 = a1[j] * xi + b1[j];
    const bool later = z1 >= z0;
    const T gz = gr[c] * sv;
    const T m = later ? T(1) : T(0);
    if constexpr (kGx) gxr[c] = gz * (later ? a1[j] : a0[j]);
    zsum += gr[c] * (later ? z1 : z0);
    g0[c] += gz - m * gz;
    gx0[c] += (gz - m * gz) * xi;
    g1[c] += m * gz;
    gx1[c] += m * gz * xi;
  }
  return zsum;
}

template <typename T>
void backward_rows(const T* g, const T* x, const T* a, const T* b, const T* scale, T* gx, T* sums, T* gsc,
                   const Shape& sh) {
  // Channels are innermost: each sample accumulates its (2K, C) sums over the positions.
  const int64_t cs = sh.ca > 1 ? 1 : 0;
  const int64_t piece = sh.na * sh.ca;
  const int64_t plane_count = sh.n * sh.c;
  at::parallel_for(0, sh.n, grain(sh.s * sh.c), [&](int64_t begin, int64_t end) {
    std::vector<T> acc(2 * sh.k * sh.c);
    for (int64_t n = begin; n < end; ++n) {
      std::fill(acc.begin(), acc.end(), T(0));
      const T* ap = a + coef(sh, 0, n, 0);
      const T* bp = b + coef(sh, 0, n, 0);
      for (int64_t s = 0; s < sh.s; ++s) {
        const int64_t r = n * sh.s + s;
        const T* xr = x + r * sh.c;
        const T* gr = g + r * sh.c;
        T* gxr = gx ? gx + r * sh.c : nullptr;
        const T sv = scale ? scale[r] : T(1);
        T zsum = 0;
        if (sh.k == 2) {
          auto row = gxr ? (cs ? backward_row2<T, true, false> : backward_row2<T, true, true>)
                         : (cs ? backward_row2<T, false, false> : backward_row2<T, false, true>);
          zsum = row(xr, gr, sv, ap, bp, ap + piece, bp + piece, gxr, acc.data(), sh.c);
        } else {
          for (int64_t c = 0; c < sh.c; ++c) {
            const T xi = xr[c];
            T best = ap[c * cs] * xi + bp[c * cs];
            int64_t idx = 0;
            for (int64_t k = 1; k < sh.k; ++k) {
              const T z = ap[k * piece + c * cs] * xi + bp[k * piece + c * cs];
              if (z >= best) {
                best = z;
                idx = k;
              }
            }
            const T gz = gr[c] * sv;
            if (gxr) gxr[c] = gz * ap[idx * piece + c * cs];
            zsum += gr[c] * best;
            acc[(2 * idx) * sh.c + c] += gz;
            acc[(2 * idx + 1) * sh.c + c] += gz * xi;
          }
        }
        if (gsc) gsc[r] = zsum;
      }
      for (int64_t j = 0; j < 2 * sh.k; ++j) {
        std::copy(acc.begin() + j * sh.c, acc.begin() + (j + 1) * sh.c, sums + j * plane_count + n * sh.c);
      }
    }
  });
}

// The input gradient goes into `grad_x` (as `out` in forward; empty: not needed); returns the sums and
// the scale gradient (empty when not asked for).
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& a,
                                            const at::Tensor& b, const c10::optional<at::Tensor>& scale, bool rows,
                                            bool need_coef, bool need_scale, const at::Tensor& grad_x) {
  const Shape sh = check(x, a, b, scale, rows);
  check_out(grad, x, "the gradient");
  const bool need_x = grad_x.numel() > 0;
  if (need_x) check_out(grad_x, x, "grad_x");
  const at::Tensor& gx = grad_x;
  // The sums are always computed (they come with the pass); returned only when asked for.
  at::Tensor sums = at::empty({2 * sh.k, sh.n, sh.c}, x.options());
  at::Tensor gsc = need_scale ? at::zeros({sh.n, sh.s}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dyrelu_native_backward", [&] {
    const scalar_t* sp = scale.has_value() ? scale->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = need_x ? gx.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gsp = need_scale ? gsc.mutable_data_ptr<scalar_t>() : nullptr;
    auto run = rows ? backward_rows<scalar_t> : backward_planes<scalar_t>;
    run(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
        b.const_data_ptr<scalar_t>(), sp, gxp, sums.mutable_data_ptr<scalar_t>(), gsp, sh);
  });
  if (!need_coef) sums = at::empty({0}, x.options());
  return {sums, gsc};
}

}  // namespace

TORCH_LIBRARY(dyrelu_native, m) {
  m.def("forward(Tensor x, Tensor a, Tensor b, Tensor? scale, bool rows, Tensor(a!) out) -> ()");
  m.def(
      "backward(Tensor grad, Tensor x, Tensor a, Tensor b, Tensor? scale, bool rows, bool need_coef, bool need_scale, "
      "Tensor(a!) grad_x) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dyrelu_native, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
}
