// Fused CPU kernels of DY-ReLU's piecewise maximum y = s * max_k(a_k x + b_k) and its backward.
//
// One pass over x for the forward and one pass over (x, grad) for the backward, where the ATen
// sequence in dyrelu/_piecewise.py needs three to eight. Built on first use by dyrelu/_native and
// registered as torch.ops.dyrelu_native.{forward,backward}.
//
// Layouts (chosen by the caller): "planes" is x viewed as (N, C, S) contiguous (channels-first),
// "rows" is x viewed as (N, S, C) contiguous (channels-last, tokens, (N, C) input).
// Coefficients come as contiguous (K, Na, Ca) with Na in {1, N} and Ca in {1, C}, in the computation
// dtype (the input's; float32 for bfloat16/float16 input); the optional scale as contiguous (N, S). Ties go to the later piece (the ReLU configuration has gradient 0 at
// x == 0, as torch.relu); where a comparison is NaN the earlier piece keeps the gradient, and the
// forward propagates NaN like torch.maximum.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kMaxPieces = 4;
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
  const auto opmath = at::toOpMathType(x.scalar_type());
  TORCH_CHECK(a.scalar_type() == opmath && b.scalar_type() == opmath,
              "dyrelu_native: coefficients must have the input's computation dtype (float32 for 16-bit input)");
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

// ---- loads and stores ---------------------------------------------------------------------------------
// Element type T to computation type A and back. bfloat16 converts by bit shifts (round to nearest even,
// NaN kept), which the compiler vectorises; c10::BFloat16's own conversions it does not.

template <typename T, typename A>
inline A load(const T* p, int64_t i) {
  return A(p[i]);
}

template <typename T, typename A>
inline void store(T* p, int64_t i, A v) {
  p[i] = T(v);
}

template <>
inline float load<c10::BFloat16, float>(const c10::BFloat16* p, int64_t i) {
  const uint32_t bits = uint32_t(reinterpret_cast<const uint16_t*>(p)[i]) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

template <>
inline void store<c10::BFloat16, float>(c10::BFloat16* p, int64_t i, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof v);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  reinterpret_cast<uint16_t*>(p)[i] = uint16_t(v != v ? 0x7FC0u : rounded);
}

// ---- one element -----------------------------------------------------------------------------------
// K is a compile-time constant, the pieces are plain scalars (no arrays: the compiler would keep them
// in memory) and every choice is a select, so that the loops below vectorise.

// Up to four pieces' slopes and intercepts (unused ones are never read).
template <typename T>
struct Pieces {
  T a0 = 0, b0 = 0, a1 = 0, b1 = 0, a2 = 0, b2 = 0, a3 = 0, b3 = 0;
};

template <typename T, int K>
inline Pieces<T> load_pieces(const T* a, const T* b, int64_t stride, int64_t offset) {
  Pieces<T> p;
  p.a0 = a[offset], p.b0 = b[offset];
  if constexpr (K > 1) p.a1 = a[stride + offset], p.b1 = b[stride + offset];
  if constexpr (K > 2) p.a2 = a[2 * stride + offset], p.b2 = b[2 * stride + offset];
  if constexpr (K > 3) p.a3 = a[3 * stride + offset], p.b3 = b[3 * stride + offset];
  return p;
}

// max_k(a_k x + b_k), NaN-propagating like torch.maximum.
template <typename T, int K>
inline T max_pieces(T xi, T a0, T b0, T a1, T b1, T a2, T b2, T a3, T b3) {
  T best = a0 * xi + b0;
  if constexpr (K > 1) {
    const T z = a1 * xi + b1;
    best = (z >= best || z != z) ? z : best;
  }
  if constexpr (K > 2) {
    const T z = a2 * xi + b2;
    best = (z >= best || z != z) ? z : best;
  }
  if constexpr (K > 3) {
    const T z = a3 * xi + b3;
    best = (z >= best || z != z) ? z : best;
  }
  return best;
}

// The active piece for backward: its value z and slope, and m_k = 1 where piece k >= 1 is active
// (ties to the later piece; where a comparison is NaN the earlier piece stays).
template <typename T, int K>
inline void active_piece(T xi, T a0, T b0, T a1, T b1, T a2, T b2, T a3, T b3, T& z, T& slope, T& m1, T& m2,
                         T& m3) {
  z = a0 * xi + b0;
  slope = a0;
  m1 = m2 = m3 = T(0);
  if constexpr (K > 1) {
    const T zk = a1 * xi + b1;
    const bool take = zk >= z;
    z = take ? zk : z;
    slope = take ? a1 : slope;
    m1 = take ? T(1) : T(0);
  }
  if constexpr (K > 2) {
    const T zk = a2 * xi + b2;
    const bool take = zk >= z;
    z = take ? zk : z;
    slope = take ? a2 : slope;
    m1 = take ? T(0) : m1;
    m2 = take ? T(1) : T(0);
  }
  if constexpr (K > 3) {
    const T zk = a3 * xi + b3;
    const bool take = zk >= z;
    z = take ? zk : z;
    slope = take ? a3 : slope;
    m1 = take ? T(0) : m1;
    m2 = take ? T(0) : m2;
    m3 = take ? T(1) : T(0);
  }
}

template <typename F>
void with_flag(bool value, F&& f) {
  if (value) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// Runs f(std::integral_constant<int, K>) for the number of pieces k (1 to kMaxPieces).
template <typename F>
void with_pieces(int64_t k, F&& f) {
  switch (k) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: TORCH_CHECK(false, "dyrelu_native: expected 1 to ", kMaxPieces, " pieces, got ", k);
  }
}

// ---- forward --------------------------------------------------------------------------------------

// T: the tensors' dtype; A: the computation's (float for bfloat16 and float16 tensors).
template <typename T, typename A, int K, bool kScale>
void forward_plane(const T* __restrict x, const T* __restrict sp, Pieces<A> p, T* __restrict y, int64_t s) {
  const A a0 = p.a0, b0 = p.b0, a1 = p.a1, b1 = p.b1, a2 = p.a2, b2 = p.b2, a3 = p.a3, b3 = p.b3;
#pragma omp simd
  for (int64_t i = 0; i < s; ++i) {
    const A v = max_pieces<A, K>(load<T, A>(x, i), a0, b0, a1, b1, a2, b2, a3, b3);
    store<T, A>(y, i, kScale ? v * load<T, A>(sp, i) : v);
  }
}

// kShared: one coefficient for all channels (DY-ReLU-A); `piece` is the distance between pieces.
template <typename T, typename A, int K, bool kShared>
void forward_row(const T* __restrict xr, A scale, const A* ap, const A* bp, int64_t piece, T* __restrict yr,
                 int64_t channels) {
  const A* __restrict a0 = ap;
  const A* __restrict b0 = bp;
  const A* __restrict a1 = ap + (K > 1 ? piece : 0);
  const A* __restrict b1 = bp + (K > 1 ? piece : 0);
  const A* __restrict a2 = ap + (K > 2 ? 2 * piece : 0);
  const A* __restrict b2 = bp + (K > 2 ? 2 * piece : 0);
  const A* __restrict a3 = ap + (K > 3 ? 3 * piece : 0);
  const A* __restrict b3 = bp + (K > 3 ? 3 * piece : 0);
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t j = kShared ? 0 : c;
    store<T, A>(yr, c, max_pieces<A, K>(load<T, A>(xr, c), a0[j], b0[j], a1[j], b1[j], a2[j], b2[j], a3[j], b3[j]) * scale);
  }
}

template <typename T, typename A, int K>
void forward_kernel(const T* x, const A* a, const A* b, const T* scale, T* y, const Shape& sh, bool rows) {
  if (!rows) {
    with_flag(scale != nullptr, [&](auto has_scale) {
      at::parallel_for(0, sh.n * sh.c, grain(sh.s), [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const int64_t n = p / sh.c, c = p % sh.c;
          const Pieces<A> pieces = load_pieces<A, K>(a, b, sh.na * sh.ca, coef(sh, 0, n, c));
          forward_plane<T, A, K, decltype(has_scale)::value>(x + p * sh.s, scale ? scale + n * sh.s : nullptr, pieces,
                                                          y + p * sh.s, sh.s);
        }
      });
    });
    return;
  }
  with_flag(sh.ca == 1, [&](auto shared) {
    at::parallel_for(0, sh.n * sh.s, grain(sh.c), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / sh.s;
        forward_row<T, A, K, decltype(shared)::value>(x + r * sh.c, scale ? load<T, A>(scale, r) : A(1), a + coef(sh, 0, n, 0),
                                                   b + coef(sh, 0, n, 0), sh.na * sh.ca, y + r * sh.c, sh.c);
      }
    });
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dyrelu_native_forward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* sp = scale.has_value() ? scale->const_data_ptr<scalar_t>() : nullptr;
    with_pieces(sh.k, [&](auto pieces) {
      forward_kernel<scalar_t, opmath_t, decltype(pieces)::value>(
          x.const_data_ptr<scalar_t>(), a.const_data_ptr<opmath_t>(), b.const_data_ptr<opmath_t>(), sp,
          out.mutable_data_ptr<scalar_t>(), sh, rows);
    });
  });
}

// ---- backward -------------------------------------------------------------------------------------
//
// Per element, with k the active piece, z = a_k x + b_k and gz = grad * scale:
//   grad_x = gz * a_k;  sums[2k] += gz and sums[2k+1] += gz * x per (sample, channel);
//   grad_scale[n, s] = sum over channels of grad * z.
// sums is (2K, N, C): the caller reduces it to the coefficients' shape.

// One plane: the sums of pieces 1.. are accumulated, piece 0 gets the total minus those.
template <typename T, typename A, int K, bool kScale, bool kGx, bool kGsc>
void backward_plane(const T* __restrict g, const T* __restrict x, const T* __restrict sp, T* __restrict gx,
                    A* __restrict gsc, Pieces<A> p, int64_t s, A* sums) {
  const A a0 = p.a0, b0 = p.b0, a1 = p.a1, b1 = p.b1, a2 = p.a2, b2 = p.b2, a3 = p.a3, b3 = p.b3;
  A gall = 0, gxall = 0, g1 = 0, g2 = 0, g3 = 0, gx1 = 0, gx2 = 0, gx3 = 0;
#pragma omp simd reduction(+ : gall, gxall, g1, g2, g3, gx1, gx2, gx3)
  for (int64_t i = 0; i < s; ++i) {
    const A xi = load<T, A>(x, i), gi = load<T, A>(g, i);
    A z, slope, m1, m2, m3;
    active_piece<A, K>(xi, a0, b0, a1, b1, a2, b2, a3, b3, z, slope, m1, m2, m3);
    const A gz = kScale ? gi * load<T, A>(sp, i) : gi;
    if constexpr (kGx) store<T, A>(gx, i, gz * slope);
    if constexpr (kGsc) gsc[i] += gi * z;
    gall += gz;
    gxall += gz * xi;
    if constexpr (K > 1) g1 += m1 * gz, gx1 += m1 * gz * xi;
    if constexpr (K > 2) g2 += m2 * gz, gx2 += m2 * gz * xi;
    if constexpr (K > 3) g3 += m3 * gz, gx3 += m3 * gz * xi;
  }
  const A pg[4] = {gall - (g1 + g2 + g3), g1, g2, g3};
  const A pgx[4] = {gxall - (gx1 + gx2 + gx3), gx1, gx2, gx3};
  for (int k = 0; k < K; ++k) sums[2 * k] = pg[k], sums[2 * k + 1] = pgx[k];
}

// One row of channels: adds to the per-channel sums acc (2K rows of C) and returns the row's sum of
// grad * z (the scale gradient of this position).
template <typename T, typename A, int K, bool kGx, bool kShared>
A backward_row(const T* __restrict xr, const T* __restrict gr, A scale, const A* ap, const A* bp, int64_t piece,
               T* __restrict gxr, A* __restrict acc, int64_t channels) {
  const A* __restrict a0 = ap;
  const A* __restrict b0 = bp;
  const A* __restrict a1 = ap + (K > 1 ? piece : 0);
  const A* __restrict b1 = bp + (K > 1 ? piece : 0);
  const A* __restrict a2 = ap + (K > 2 ? 2 * piece : 0);
  const A* __restrict b2 = bp + (K > 2 ? 2 * piece : 0);
  const A* __restrict a3 = ap + (K > 3 ? 3 * piece : 0);
  const A* __restrict b3 = bp + (K > 3 ? 3 * piece : 0);
  A* __restrict s0 = acc;
  A* __restrict t0 = acc + channels;
  A* __restrict s1 = acc + (K > 1 ? 2 * channels : 0);
  A* __restrict t1 = acc + (K > 1 ? 3 * channels : 0);
  A* __restrict s2 = acc + (K > 2 ? 4 * channels : 0);
  A* __restrict t2 = acc + (K > 2 ? 5 * channels : 0);
  A* __restrict s3 = acc + (K > 3 ? 6 * channels : 0);
  A* __restrict t3 = acc + (K > 3 ? 7 * channels : 0);
  A zsum = 0;
#pragma omp simd reduction(+ : zsum)
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t j = kShared ? 0 : c;
    const A xi = load<T, A>(xr, c), gi = load<T, A>(gr, c);
    A z, slope, m1, m2, m3;
    active_piece<A, K>(xi, a0[j], b0[j], a1[j], b1[j], a2[j], b2[j], a3[j], b3[j], z, slope, m1, m2, m3);
    const A gz = gi * scale;
    if constexpr (kGx) store<T, A>(gxr, c, gz * slope);
    zsum += gi * z;
    const A m0 = A(1) - m1 - m2 - m3;
    s0[c] += m0 * gz;
    t0[c] += m0 * gz * xi;
    if constexpr (K > 1) s1[c] += m1 * gz, t1[c] += m1 * gz * xi;
    if constexpr (K > 2) s2[c] += m2 * gz, t2[c] += m2 * gz * xi;
    if constexpr (K > 3) s3[c] += m3 * gz, t3[c] += m3 * gz * xi;
  }
  return zsum;
}

template <typename T, typename A, int K>
void backward_kernel(const T* g, const T* x, const A* a, const A* b, const T* scale, T* gx, A* sums, A* gsc,
                     const Shape& sh, bool rows) {
  const int64_t plane_count = sh.n * sh.c;
  if (!rows) {
    // With a scale gradient, the channels of one sample add into the same positions: one task per sample.
    const int64_t items = gsc ? sh.n : plane_count;
    const int64_t per_item = gsc ? sh.c * sh.s : sh.s;
    with_flag(scale != nullptr, [&](auto has_scale) {
      with_flag(gx != nullptr, [&](auto has_gx) {
        with_flag(gsc != nullptr, [&](auto has_gsc) {
          at::parallel_for(0, items, grain(per_item), [&](int64_t begin, int64_t end) {
            A local[2 * K];
            for (int64_t item = begin; item < end; ++item) {
              const int64_t first = gsc ? item * sh.c : item, last = gsc ? first + sh.c : first + 1;
              for (int64_t p = first; p < last; ++p) {
                const int64_t n = p / sh.c, c = p % sh.c;
                const Pieces<A> pieces = load_pieces<A, K>(a, b, sh.na * sh.ca, coef(sh, 0, n, c));
                backward_plane<T, A, K, decltype(has_scale)::value, decltype(has_gx)::value, decltype(has_gsc)::value>(
                    g + p * sh.s, x + p * sh.s, scale ? scale + n * sh.s : nullptr, gx ? gx + p * sh.s : nullptr,
                    gsc ? gsc + n * sh.s : nullptr, pieces, sh.s, local);
                for (int j = 0; j < 2 * K; ++j) sums[j * plane_count + p] = local[j];
              }
            }
          });
        });
      });
    });
    return;
  }
  // Channels innermost: each sample accumulates its (2K, C) sums over its positions.
  with_flag(gx != nullptr, [&](auto has_gx) {
    with_flag(sh.ca == 1, [&](auto shared) {
      at::parallel_for(0, sh.n, grain(sh.s * sh.c), [&](int64_t begin, int64_t end) {
        std::vector<A> acc(2 * K * sh.c);
        for (int64_t n = begin; n < end; ++n) {
          std::fill(acc.begin(), acc.end(), A(0));
          for (int64_t s = 0; s < sh.s; ++s) {
            const int64_t r = n * sh.s + s;
            const A zsum = backward_row<T, A, K, decltype(has_gx)::value, decltype(shared)::value>(
                x + r * sh.c, g + r * sh.c, scale ? load<T, A>(scale, r) : A(1), a + coef(sh, 0, n, 0), b + coef(sh, 0, n, 0),
                sh.na * sh.ca, gx ? gx + r * sh.c : nullptr, acc.data(), sh.c);
            if (gsc) gsc[r] = zsum;
          }
          for (int j = 0; j < 2 * K; ++j) {
            std::copy(acc.begin() + j * sh.c, acc.begin() + (j + 1) * sh.c, sums + j * plane_count + n * sh.c);
          }
        }
      });
    });
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
  // The sums are always computed (they come with the pass); returned only when asked for.
  // Sums and the scale gradient in the computation dtype (float for 16-bit input).
  const auto acc_options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  at::Tensor sums = at::empty({2 * sh.k, sh.n, sh.c}, acc_options);
  at::Tensor gsc = need_scale ? at::zeros({sh.n, sh.s}, acc_options) : at::empty({0}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dyrelu_native_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* sp = scale.has_value() ? scale->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
    opmath_t* gsp = need_scale ? gsc.mutable_data_ptr<opmath_t>() : nullptr;
    with_pieces(sh.k, [&](auto pieces) {
      backward_kernel<scalar_t, opmath_t, decltype(pieces)::value>(
          grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), a.const_data_ptr<opmath_t>(),
          b.const_data_ptr<opmath_t>(), sp, gxp, sums.mutable_data_ptr<opmath_t>(), gsp, sh, rows);
    });
  });
  if (!need_coef) sums = at::empty({0}, acc_options);
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
