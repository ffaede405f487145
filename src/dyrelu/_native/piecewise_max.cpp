// Fused CPU kernels of DY-ReLU's piecewise maximum y = s * max_k(a_k x + b_k) and its backward.
//
// One pass over x for the forward and one pass over (x, grad) for the backward, where the ATen
// sequence in dyrelu/_piecewise.py needs three to eight. Built on first use by dyrelu/_native and
// registered as torch.ops.dyrelu_native.{forward,backward}.
//
// Layouts (chosen by the caller): "planes" is x viewed as (N, C, S) contiguous (channels-first),
// "rows" is x viewed as (N, S, C) contiguous (channels-last, tokens, (N, C) input).
// Coefficients come as contiguous (K, Na, Ca) with Na in {1, N} and Ca in {1, C}, in the computation
// dtype (the input's; float32 for bfloat16 input); the optional scale as contiguous (N, S). Ties go to the
// later piece (the ReLU configuration has gradient 0 at x == 0, as torch.relu); where a comparison is NaN
// the earlier piece keeps the gradient, and the forward propagates NaN like torch.maximum.
//
// Dtypes: float32, float64 and bfloat16. Not float16: c10::Half's conversions do not vectorise, and with
// them the kernels took 2.6x the ATen path's time (dyrelu/_native routes float16 to ATen).
//
// Edge values: an infinite x (fp16 overflow, say) takes the limit x -> +-inf. A zero slope (or scale) times
// +-inf contributes 0, not NaN, so ReLU's pieces give torch.relu's values and gradients at +-inf; the
// active piece there is the one active for all x large enough (the largest slope towards +inf, the
// smallest towards -inf; for equal slopes the larger intercept; ties to the later piece). A NaN x gives
// NaN, with the earlier piece's gradient (torch.relu's 1). The forward takes the limit with a select per
// piece where a slope or the scale is zero (elsewhere the plain loop is exact, see "forward"). The
// backward's loops compute as for finite x and watch their sums of grad * x, which are not finite where x
// is not: then the *_exact functions, out of line and rarely run, compute that plane or sample again
// element by element (for finite x they give what the loops give). The slopes' gradients sum grad * x:
// they are not finite where x is not.

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
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

// The code for edge values stays out of the vectorised loops' functions: not inlined, optimised for size
// (COLD). The forward's rows of one sample are a function of their own (APART); its plane loop is always
// inlined into the loop over planes (INLINE: as a call per plane, 15-30 % slower on 14x14 maps).
#if defined(__GNUC__) || defined(__clang__)
#define DYRELU_COLD __attribute__((noinline, cold))
#define DYRELU_APART __attribute__((noinline))
#define DYRELU_INLINE inline __attribute__((always_inline))
#else
#define DYRELU_COLD
#define DYRELU_APART
#define DYRELU_INLINE inline
#endif

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
    best = ((z >= best) | (z != z)) ? z : best;
  }
  if constexpr (K > 2) {
    const T z = a2 * xi + b2;
    best = ((z >= best) | (z != z)) ? z : best;
  }
  if constexpr (K > 3) {
    const T z = a3 * xi + b3;
    best = ((z >= best) | (z != z)) ? z : best;
  }
  return best;
}

// v clamped to [floor, ceiling], NaN kept (where the forward took the pieces with a zero slope out).
template <typename T>
inline T clamp_keep_nan(T v, T floor, T ceiling) {
  v = v < floor ? floor : v;
  return v > ceiling ? ceiling : v;
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

// ---- edge values (out of the loops) ----------------------------------------------------------------

// u * v where a zero u (a slope or a scale) times an infinite v is 0 (the limit), not NaN; NaN stays NaN.
template <typename T>
inline T mul0(T u, T v) {
  return (u == T(0) && std::isinf(v)) ? T(0) : u * v;
}

// The active piece (returned) and its value z: for finite or NaN x as active_piece; for infinite x the
// piece active for all x large enough in that direction (see the top of the file).
template <typename T, int K>
inline int active_piece_exact(T xi, const Pieces<T>& p, T& z) {
  const T as[4] = {p.a0, p.a1, p.a2, p.a3}, bs[4] = {p.b0, p.b1, p.b2, p.b3};
  int best = 0;
  if (std::isinf(xi)) {
    for (int k = 1; k < K; ++k) {
      const T da = as[k] - as[best];
      if (da != T(0) ? da * xi > T(0) : bs[k] >= bs[best]) best = k;
    }
    z = mul0(as[best], xi) + bs[best];
    return best;
  }
  z = as[0] * xi + bs[0];
  for (int k = 1; k < K; ++k) {
    const T zk = as[k] * xi + bs[k];
    if (zk >= z) best = k, z = zk;
  }
  return best;
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
//
// Only a zero slope or a zero scale can make the plain loops wrong at infinite x (0 * inf = NaN; with
// non-zero slopes every piece is +-inf there and the maximum is the limit, and a NaN x gives NaN as it
// should). Planes and rows whose coefficients have a zero slope run the loops on fewer pieces: those with a
// zero slope are taken out, and the largest of their intercepts is a floor under the maximum of the others
// (ReLU's pieces: max(x, 0), one piece fewer than before); when all slopes are zero the pieces become x and
// the floor is also a ceiling (a constant; NaN x stays NaN). Rows of a sample whose channels have zero
// slopes in different pieces keep K pieces, each zero-slope piece replaced by a copy of another (a
// duplicate leaves the maximum as it is). A zero scale is a select (planes) or a scalar loop (rows). The
// others pay nothing. (Looking for NaN in the output instead cost a pass over it: 20-70 % more forward
// time on cached 14x14 maps; a select per piece, 2x; duplicates and a floor on rows, 20 %.)

template <typename A, int K>
inline bool zero_slope(const Pieces<A>& p) {
  return p.a0 == A(0) || (K > 1 && p.a1 == A(0)) || (K > 2 && p.a2 == A(0)) || (K > 3 && p.a3 == A(0));
}

// The pieces with a non-zero slope, in order, into `kept` (returns how many: at least 1), the largest
// intercept of the others into `floor` (-inf: none) and `ceiling` (+inf; when no slope is non-zero the
// pieces become x and floor = ceiling = max_k b_k). `fill`: fill the slots after the kept pieces with
// copies of the last kept one (then all K pieces can be used).
template <typename A, int K>
inline int compact_pieces(const Pieces<A>& p, Pieces<A>& kept, A& floor, A& ceiling, bool fill) {
  const A as[4] = {p.a0, p.a1, p.a2, p.a3}, bs[4] = {p.b0, p.b1, p.b2, p.b3};
  A ka[4] = {0, 0, 0, 0}, kb[4] = {0, 0, 0, 0};
  floor = -std::numeric_limits<A>::infinity();
  ceiling = std::numeric_limits<A>::infinity();
  int k = 0;
  for (int j = 0; j < K; ++j) {
    if (as[j] != A(0)) {
      ka[k] = as[j], kb[k] = bs[j], ++k;
    } else {
      floor = bs[j] > floor ? bs[j] : floor;
    }
  }
  if (k == 0) {  // a constant
    ka[0] = A(1), kb[0] = A(0), ceiling = floor, k = 1;
  }
  for (int j = k; fill && j < K; ++j) ka[j] = ka[k - 1], kb[j] = kb[k - 1];
  kept = Pieces<A>{ka[0], kb[0], ka[1], kb[1], ka[2], kb[2], ka[3], kb[3]};
  return k;
}

// v * scale; kZero: a zero scale times an infinite v is 0, the limit, not NaN.
template <typename T, bool kZero>
inline T scaled(T v, T scale) {
  if constexpr (kZero) {
    return (scale == T(0) && std::abs(v) == std::numeric_limits<T>::infinity()) ? T(0) : v * scale;
  } else {
    return v * scale;
  }
}

// T: the tensors' dtype; A: the computation's (float for bfloat16 tensors). kBounds: `p` from
// compact_pieces, clamped to [floor, ceiling]; kZeroScale: the scale has a zero.
template <typename T, typename A, int K, bool kScale, bool kBounds, bool kZeroScale>
DYRELU_INLINE void forward_plane(const T* __restrict x, const T* __restrict sp, Pieces<A> p, A floor, A ceiling,
                                 T* __restrict y, int64_t s) {
  const A a0 = p.a0, b0 = p.b0, a1 = p.a1, b1 = p.b1, a2 = p.a2, b2 = p.b2, a3 = p.a3, b3 = p.b3;
#pragma omp simd
  for (int64_t i = 0; i < s; ++i) {
    A v = max_pieces<A, K>(load<T, A>(x, i), a0, b0, a1, b1, a2, b2, a3, b3);
    if constexpr (kBounds) v = clamp_keep_nan(v, floor, ceiling);
    store<T, A>(y, i, kScale ? scaled<A, kZeroScale>(v, load<T, A>(sp, i)) : v);
  }
}

// kShared: one coefficient for all channels (DY-ReLU-A); `piece` is the distance between pieces. kBounds
// 1: the pieces from compact_pieces and the floors at fp[j]; 2: also the ceilings at fp[piece + j].
template <typename T, typename A, int K, bool kShared, int kBounds>
void forward_row(const T* __restrict xr, A scale, const A* ap, const A* bp, const A* fp, int64_t piece,
                 T* __restrict yr, int64_t channels) {
  const A* __restrict a0 = ap;
  const A* __restrict b0 = bp;
  const A* __restrict a1 = ap + (K > 1 ? piece : 0);
  const A* __restrict b1 = bp + (K > 1 ? piece : 0);
  const A* __restrict a2 = ap + (K > 2 ? 2 * piece : 0);
  const A* __restrict b2 = bp + (K > 2 ? 2 * piece : 0);
  const A* __restrict a3 = ap + (K > 3 ? 3 * piece : 0);
  const A* __restrict b3 = bp + (K > 3 ? 3 * piece : 0);
  const A* __restrict lo = fp;
  const A* __restrict hi = kBounds > 1 ? fp + piece : fp;
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t j = kShared ? 0 : c;
    A v = max_pieces<A, K>(load<T, A>(xr, c), a0[j], b0[j], a1[j], b1[j], a2[j], b2[j], a3[j], b3[j]);
    if constexpr (kBounds == 1) v = v < lo[j] ? lo[j] : v;
    if constexpr (kBounds == 2) v = clamp_keep_nan(v, lo[j], hi[j]);
    store<T, A>(yr, c, v * scale);
  }
}

// A row whose scale is zero: 0 everywhere (0 * inf too), NaN where the maximum is NaN. Rare: not vectorised.
template <typename T, typename A, int K>
DYRELU_COLD void forward_row_zero_scale(const T* xr, const A* ap, const A* bp, int64_t piece, bool shared, T* yr,
                                        int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) {
    const Pieces<A> p = load_pieces<A, K>(ap, bp, piece, shared ? 0 : c);
    const A as[4] = {p.a0, p.a1, p.a2, p.a3}, bs[4] = {p.b0, p.b1, p.b2, p.b3};
    const A xi = load<T, A>(xr, c);
    A v = mul0(as[0], xi) + bs[0];
    for (int k = 1; k < K; ++k) {
      const A z = mul0(as[k], xi) + bs[k];
      v = (z >= v || z != z) ? z : v;
    }
    store<T, A>(yr, c, mul0(A(0), v));
  }
}

// Rows first..last of one sample: forward_row on each (pieces at ap, bp, fp), or forward_row_zero_scale (on
// the pieces as given, at a0, b0) where the row's scale is zero. One call per sample, so that what is chosen
// per sample is chosen once (rows of few channels are short: a choice per row cost 10 % more time).
template <typename T, typename A, int K, int KG, bool kShared, int kBounds>
DYRELU_APART void forward_rows(const T* x, const T* scale, const A* ap, const A* bp, const A* fp, const A* a0,
                               const A* b0, int64_t piece, T* y, int64_t first, int64_t last, int64_t channels) {
  for (int64_t r = first; r < last; ++r) {
    const A sr = scale ? load<T, A>(scale, r) : A(1);
    if (sr == A(0)) {
      forward_row_zero_scale<T, A, KG>(x + r * channels, a0, b0, piece, kShared, y + r * channels, channels);
    } else {
      forward_row<T, A, K, kShared, kBounds>(x + r * channels, sr, ap, bp, fp, piece, y + r * channels, channels);
    }
  }
}

// How the rows of one coefficient row (a sample, or all of them) run: `k` pieces, `bounds` as forward_row's.
struct RowPlan {
  int k;
  int bounds;
};

// The rows' plans, and the rewritten coefficients they use (empty when no slope is zero): the pieces in the
// (K, Na, Ca) layout of a and b, then the floors and ceilings (2, Na, Ca). Row by row of coefficients and
// piece by piece, so that the common cases (no zero slope; the same pieces with a zero slope in every
// channel, as in a fresh DY-ReLU) are a few vectorised passes: a loop per channel cost 50 us per call.
template <typename A, int K>
std::vector<A> row_plans(const A* a, const A* b, const Shape& sh, std::vector<RowPlan>& plans) {
  const int64_t piece = sh.na * sh.ca, ca = sh.ca;
  constexpr A kInf = std::numeric_limits<A>::infinity();
  plans.assign(sh.na, RowPlan{K, 0});
  std::vector<int> zeros(sh.na * K);  // per coefficient row and piece: how many channels have a zero slope
  bool any = false;
  for (int64_t m = 0; m < sh.na; ++m) {
    for (int k = 0; k < K; ++k) {
      const A* row = a + k * piece + m * ca;
      int count = 0;
#pragma omp simd reduction(+ : count)
      for (int64_t c = 0; c < ca; ++c) count += row[c] == A(0);
      zeros[m * K + k] = count;
      any = any || count > 0;
    }
  }
  if (!any) return {};
  std::vector<A> out((2 * K + 2) * piece);
  A* fa = out.data();
  A* fb = fa + K * piece;
  A* lo = fb + K * piece;
  A* hi = lo + piece;
  for (int64_t m = 0; m < sh.na; ++m) {
    const int* z = zeros.data() + m * K;
    if (std::all_of(z, z + K, [](int n) { return n == 0; })) continue;
    const int64_t at = m * ca;
    RowPlan& plan = plans[m];
    plan.bounds = 1;
    std::fill(lo + at, lo + at + ca, -kInf);
    std::fill(hi + at, hi + at + ca, kInf);
    if (std::all_of(z, z + K, [&](int n) { return n == 0 || n == ca; })) {
      // the same pieces have a zero slope in every channel: the others, in order, and the floor
      int kept = 0;
      for (int k = 0; k < K; ++k) {
        const A* bk = b + k * piece + at;
        if (z[k] == 0) {
          std::copy(a + k * piece + at, a + k * piece + at + ca, fa + kept * piece + at);
          std::copy(bk, bk + ca, fb + kept * piece + at);
          ++kept;
        } else {
          A* f = lo + at;
#pragma omp simd
          for (int64_t c = 0; c < ca; ++c) f[c] = bk[c] > f[c] ? bk[c] : f[c];
        }
      }
      if (kept == 0) {  // all slopes zero: a constant
        std::fill(fa + at, fa + at + ca, A(1));
        std::fill(fb + at, fb + at + ca, A(0));
        std::copy(lo + at, lo + at + ca, hi + at);
        plan.bounds = 2, kept = 1;
      }
      plan.k = kept;
      continue;
    }
    for (int64_t c = 0; c < ca; ++c) {  // zero slopes in different pieces: copies of a kept piece
      const int64_t i = at + c;
      Pieces<A> p;
      A floor, ceiling;
      compact_pieces<A, K>(load_pieces<A, K>(a, b, piece, i), p, floor, ceiling, true);
      const A ka[4] = {p.a0, p.a1, p.a2, p.a3}, kb[4] = {p.b0, p.b1, p.b2, p.b3};
      for (int k = 0; k < K; ++k) fa[k * piece + i] = ka[k], fb[k * piece + i] = kb[k];
      lo[i] = floor, hi[i] = ceiling;
      if (ceiling < kInf) plan.bounds = 2;
    }
  }
  return out;
}

// Whether v[0..count) has a zero.
template <typename T, typename A>
bool any_zero(const T* v, int64_t count) {
  int zero = 0;
#pragma omp simd reduction(| : zero)
  for (int64_t i = 0; i < count; ++i) zero |= load<T, A>(v, i) == A(0);
  return zero != 0;
}

template <typename T, typename A, int K>
void forward_kernel(const T* x, const A* a, const A* b, const T* scale, T* y, const Shape& sh, bool rows) {
  if (!rows && !any_zero<A, A>(a, sh.k * sh.na * sh.ca) && !(scale && any_zero<T, A>(scale, sh.n * sh.s))) {
    // the common case on its own: a choice per plane in this loop cost 20-50 % more time on 7x7 and 14x14 maps
    with_flag(scale != nullptr, [&](auto has_scale) {
      at::parallel_for(0, sh.n * sh.c, grain(sh.s), [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const int64_t n = p / sh.c, c = p % sh.c;
          const Pieces<A> pieces = load_pieces<A, K>(a, b, sh.na * sh.ca, coef(sh, 0, n, c));
          forward_plane<T, A, K, decltype(has_scale)::value, false, false>(
              x + p * sh.s, scale ? scale + n * sh.s : nullptr, pieces, A(0), A(0), y + p * sh.s, sh.s);
        }
      });
    });
    return;
  }
  if (!rows) {
    std::vector<char> zero_scale(scale ? sh.n : 0, 0);  // per sample: whether its scale has a zero
    for (int64_t n = 0; n < static_cast<int64_t>(zero_scale.size()); ++n) {
      zero_scale[n] = any_zero<T, A>(scale + n * sh.s, sh.s);
    }
    with_flag(scale != nullptr, [&](auto has_scale) {
      constexpr bool kScale = decltype(has_scale)::value;
      at::parallel_for(0, sh.n * sh.c, grain(sh.s), [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const int64_t n = p / sh.c, c = p % sh.c;
          const Pieces<A> pieces = load_pieces<A, K>(a, b, sh.na * sh.ca, coef(sh, 0, n, c));
          const T* sp = scale ? scale + n * sh.s : nullptr;
          const bool zero = scale && zero_scale[n];
          if (!zero && !zero_slope<A, K>(pieces)) {
            forward_plane<T, A, K, kScale, false, false>(x + p * sh.s, sp, pieces, A(0), A(0), y + p * sh.s, sh.s);
            continue;
          }
          Pieces<A> kept;
          A floor, ceiling;
          const int k = compact_pieces<A, K>(pieces, kept, floor, ceiling, false);
          with_pieces(k, [&](auto kk) {
            constexpr int KK = decltype(kk)::value;
            if constexpr (KK <= K) {
              if (zero) {
                forward_plane<T, A, KK, kScale, true, true>(x + p * sh.s, sp, kept, floor, ceiling, y + p * sh.s, sh.s);
              } else {
                forward_plane<T, A, KK, kScale, true, false>(x + p * sh.s, sp, kept, floor, ceiling, y + p * sh.s, sh.s);
              }
            }
          });
        }
      });
    });
    return;
  }
  std::vector<RowPlan> plans;
  const std::vector<A> fixed = row_plans<A, K>(a, b, sh, plans);
  const int64_t piece = sh.na * sh.ca;
  with_flag(sh.ca == 1, [&](auto shared) {
    constexpr bool kShared = decltype(shared)::value;
    at::parallel_for(0, sh.n * sh.s, grain(sh.c), [&](int64_t begin, int64_t end) {
      for (int64_t first = begin; first < end;) {
        const int64_t n = first / sh.s, at = coef(sh, 0, n, 0), last = std::min(end, (n + 1) * sh.s);
        const RowPlan plan = plans[sh.na > 1 ? n : 0];
        if (plan.bounds == 0) {
          forward_rows<T, A, K, K, kShared, 0>(x, scale, a + at, b + at, nullptr, a + at, b + at, piece, y, first, last,
                                               sh.c);
        } else {
          const A *fa = fixed.data() + at, *fb = fa + K * piece, *fp = fa + 2 * K * piece;
          with_pieces(plan.k, [&](auto kk) {
            constexpr int KK = decltype(kk)::value;
            if constexpr (KK <= K) {
              if (plan.bounds == 1) {
                forward_rows<T, A, KK, K, kShared, 1>(x, scale, fa, fb, fp, a + at, b + at, piece, y, first, last, sh.c);
              } else {
                forward_rows<T, A, KK, K, kShared, 2>(x, scale, fa, fb, fp, a + at, b + at, piece, y, first, last, sh.c);
              }
            }
          });
        }
        first = last;
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
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "dyrelu_native_forward", [&] {
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

// Whether v[0..count) is all finite (a sum of grad * x is not where x is not).
template <typename A>
bool all_finite(const A* v, int64_t count) {
  A probe = 0;  // 0 * v is NaN where v is not finite
#pragma omp simd reduction(+ : probe)
  for (int64_t i = 0; i < count; ++i) probe += v[i] * A(0);
  return probe == A(0);
}

// backward_plane with active_piece_exact, element by element.
template <typename T, typename A, int K>
DYRELU_COLD void backward_plane_exact(const T* g, const T* x, const T* sp, T* gx, A* gsc, const Pieces<A>& p,
                                      int64_t s, A* sums) {
  const A as[4] = {p.a0, p.a1, p.a2, p.a3};
  A pg[4] = {0, 0, 0, 0}, pgx[4] = {0, 0, 0, 0}, gall = 0, gxall = 0;
  for (int64_t i = 0; i < s; ++i) {
    const A xi = load<T, A>(x, i), gi = load<T, A>(g, i);
    A z;
    const int k = active_piece_exact<A, K>(xi, p, z);
    const A gz = sp ? gi * load<T, A>(sp, i) : gi;
    if (gx) store<T, A>(gx, i, gz * as[k]);
    if (gsc) gsc[i] += gi * z;
    gall += gz;
    gxall += gz * xi;
    for (int j = 1; j < K; ++j) {  // the same sums as backward_plane's
      const A m = j == k ? A(1) : A(0);
      pg[j] += m * gz, pgx[j] += m * gz * xi;
    }
  }
  pg[0] = gall - (pg[1] + pg[2] + pg[3]);
  pgx[0] = gxall - (pgx[1] + pgx[2] + pgx[3]);
  for (int k = 0; k < K; ++k) sums[2 * k] = pg[k], sums[2 * k + 1] = pgx[k];
}

// Planes first..last (one plane, or a whole sample when the scale gradient adds up over its channels)
// again with backward_plane_exact.
template <typename T, typename A, int K>
DYRELU_COLD void backward_planes_exact(const T* g, const T* x, const A* a, const A* b, const T* scale, T* gx,
                                       A* sums, A* gsc, const Shape& sh, int64_t first, int64_t last) {
  if (gsc) std::fill(gsc + (first / sh.c) * sh.s, gsc + (first / sh.c + 1) * sh.s, A(0));
  A local[2 * K];
  for (int64_t p = first; p < last; ++p) {
    const int64_t n = p / sh.c, c = p % sh.c;
    const Pieces<A> pieces = load_pieces<A, K>(a, b, sh.na * sh.ca, coef(sh, 0, n, c));
    backward_plane_exact<T, A, K>(g + p * sh.s, x + p * sh.s, scale ? scale + n * sh.s : nullptr,
                                  gx ? gx + p * sh.s : nullptr, gsc ? gsc + n * sh.s : nullptr, pieces, sh.s, local);
    for (int j = 0; j < 2 * K; ++j) sums[j * sh.n * sh.c + p] = local[j];
  }
}

// Sample n of the rows again, element by element with active_piece_exact, into acc (as backward_row's).
template <typename T, typename A, int K>
DYRELU_COLD void backward_rows_exact(const T* g, const T* x, const A* a, const A* b, const T* scale, T* gx, A* gsc,
                                     const Shape& sh, int64_t n, std::vector<A>& acc) {
  std::fill(acc.begin(), acc.end(), A(0));
  const int64_t at = coef(sh, 0, n, 0), piece = sh.na * sh.ca;
  for (int64_t s = 0; s < sh.s; ++s) {
    const int64_t r = n * sh.s + s;
    const A scale_r = scale ? load<T, A>(scale, r) : A(1);
    A zsum = 0;
    for (int64_t c = 0; c < sh.c; ++c) {
      const Pieces<A> p = load_pieces<A, K>(a + at, b + at, piece, sh.ca == 1 ? 0 : c);
      const A as[4] = {p.a0, p.a1, p.a2, p.a3};
      const A xi = load<T, A>(x + r * sh.c, c), gi = load<T, A>(g + r * sh.c, c);
      A z;
      const int k = active_piece_exact<A, K>(xi, p, z);
      const A gz = gi * scale_r;
      if (gx) store<T, A>(gx + r * sh.c, c, gz * as[k]);
      zsum += gi * z;
      for (int j = 0; j < K; ++j) {
        const A m = j == k ? A(1) : A(0);
        acc[2 * j * sh.c + c] += m * gz;
        acc[(2 * j + 1) * sh.c + c] += m * gz * xi;
      }
    }
    if (gsc) gsc[r] = zsum;
  }
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
              bool finite = true;
              for (int64_t p = first; p < last; ++p) {
                const int64_t n = p / sh.c, c = p % sh.c;
                const Pieces<A> pieces = load_pieces<A, K>(a, b, sh.na * sh.ca, coef(sh, 0, n, c));
                backward_plane<T, A, K, decltype(has_scale)::value, decltype(has_gx)::value, decltype(has_gsc)::value>(
                    g + p * sh.s, x + p * sh.s, scale ? scale + n * sh.s : nullptr, gx ? gx + p * sh.s : nullptr,
                    gsc ? gsc + n * sh.s : nullptr, pieces, sh.s, local);
                for (int j = 0; j < 2 * K; ++j) sums[j * plane_count + p] = local[j];
                for (int j = 0; j < K; ++j) finite = finite && std::isfinite(local[2 * j + 1]);
              }
              // a sum of grad * x is not finite where x is not: these planes again, exactly
              if (!finite) backward_planes_exact<T, A, K>(g, x, a, b, scale, gx, sums, gsc, sh, first, last);
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
          // a sum of grad * x is not finite where x is not: this sample again, exactly
          if (!all_finite(acc.data(), static_cast<int64_t>(acc.size()))) {
            backward_rows_exact<T, A, K>(g, x, a, b, scale, gx, gsc, sh, n, acc);
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
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "dyrelu_native_backward", [&] {
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

// ---- the hyper function's pieces around the kernel --------------------------------------------------
//
// coefficients: the normalised residuals' sigmoid s (N, Ca * 2K), the 2K columns of a channel together
// (the last FC's output order), to the kernels' coefficients (2K, N, Ca): row j < K the slopes
// a_j = init[j] + lambda[j] * (2 s - 1), rows K.. the intercepts likewise. A NaN s (from a NaN logit) gives
// the static piece init[j], as dyrelu.functional.normalize_residual does.
template <typename A>
void coefficients_kernel(const A* s, const A* init, const A* lambda, A* out, int64_t n, int64_t ca, int64_t pieces2) {
  at::parallel_for(0, n, grain(ca * pieces2), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      for (int64_t j = 0; j < pieces2; ++j) {
        const A* __restrict sp = s + m * ca * pieces2 + j;
        A* __restrict op = out + (j * n + m) * ca;
        const A base = init[j], range = lambda[j];
#pragma omp simd
        for (int64_t c = 0; c < ca; ++c) {
          const A v = sp[c * pieces2];
          const A delta = v * A(2) - A(1);
          op[c] = v != v ? base : base + range * delta;
        }
      }
    }
  });
}

// coefficients_backward: the gradient of the logits z (N, Ca * 2K) from the kernel's sums (2K, N, Ca) (row
// 2k: sum of g over piece k's positions, the intercept b_k's gradient; row 2k + 1: of g x, the slope a_k's)
// and s = sigmoid(z): grad_z = grad_coef * lambda * 2 * (1 - s) * s, 0 where s is NaN.
template <typename A>
void coefficients_backward_kernel(const A* sums, const A* s, const A* lambda, A* out, int64_t n, int64_t ca,
                                  int64_t pieces) {
  const int64_t pieces2 = 2 * pieces;
  at::parallel_for(0, n, grain(ca * pieces2), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      for (int64_t j = 0; j < pieces2; ++j) {
        // column j of a channel: slope j (sums row 2j + 1) or intercept j - K (sums row 2(j - K))
        const int64_t row = j < pieces ? 2 * j + 1 : 2 * (j - pieces);
        const A* __restrict gp = sums + (row * n + m) * ca;
        const A* __restrict sp = s + m * ca * pieces2 + j;
        A* __restrict op = out + m * ca * pieces2 + j;
        const A range = lambda[j];
#pragma omp simd
        for (int64_t c = 0; c < ca; ++c) {
          const A v = sp[c * pieces2];
          const A g = gp[c] * range * A(2);
          op[c * pieces2] = v != v ? A(0) : g * (A(1) - v) * v;
        }
      }
    }
  });
}

void check_coefficient_args(const at::Tensor& s, const at::Tensor& init, const at::Tensor& lambda) {
  TORCH_CHECK(s.dim() == 2 && s.is_contiguous(), "dyrelu_native: expected contiguous (N, C * 2K) residuals, got ",
              s.sizes());
  TORCH_CHECK(init.dim() == 1 && init.is_contiguous() && lambda.sizes() == init.sizes() && lambda.is_contiguous() &&
                  init.numel() % 2 == 0 && init.numel() >= 2 && s.size(1) % init.numel() == 0,
              "dyrelu_native: expected 2K initial values and ranges for residuals ", s.sizes(), ", got ", init.sizes());
  TORCH_CHECK(init.scalar_type() == s.scalar_type() && lambda.scalar_type() == s.scalar_type() &&
                  (s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble),
              "dyrelu_native: expected float32 or float64 residuals, initial values and ranges of one dtype");
}

void coefficients(const at::Tensor& s, const at::Tensor& init, const at::Tensor& lambda, const at::Tensor& out) {
  check_coefficient_args(s, init, lambda);
  const int64_t n = s.size(0), pieces2 = init.numel(), ca = s.size(1) / pieces2;
  TORCH_CHECK(out.is_contiguous() && out.dim() == 3 && out.size(0) == pieces2 && out.size(1) == n &&
                  out.size(2) == ca && out.scalar_type() == s.scalar_type(),
              "dyrelu_native: expected contiguous (2K, N, C) coefficients, got ", out.sizes());
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "dyrelu_native_coefficients", [&] {
    coefficients_kernel<scalar_t>(s.const_data_ptr<scalar_t>(), init.const_data_ptr<scalar_t>(),
                                  lambda.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n, ca, pieces2);
  });
}

void coefficients_backward(const at::Tensor& sums, const at::Tensor& s, const at::Tensor& init,
                           const at::Tensor& lambda, const at::Tensor& out) {
  check_coefficient_args(s, init, lambda);
  const int64_t n = s.size(0), pieces2 = init.numel(), ca = s.size(1) / pieces2;
  TORCH_CHECK(sums.is_contiguous() && sums.dim() == 3 && sums.size(0) == pieces2 && sums.size(1) == n &&
                  sums.size(2) == ca && sums.scalar_type() == s.scalar_type(),
              "dyrelu_native: expected contiguous (2K, N, C) sums, got ", sums.sizes());
  TORCH_CHECK(out.is_contiguous() && out.sizes() == s.sizes() && out.scalar_type() == s.scalar_type(),
              "dyrelu_native: expected a contiguous gradient like the residuals, got ", out.sizes());
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "dyrelu_native_coefficients_backward", [&] {
    coefficients_backward_kernel<scalar_t>(sums.const_data_ptr<scalar_t>(), s.const_data_ptr<scalar_t>(),
                                           lambda.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n, ca,
                                           pieces2 / 2);
  });
}

}  // namespace

TORCH_LIBRARY(dyrelu_native, m) {
  m.def("forward(Tensor x, Tensor a, Tensor b, Tensor? scale, bool rows, Tensor(a!) out) -> ()");
  m.def(
      "backward(Tensor grad, Tensor x, Tensor a, Tensor b, Tensor? scale, bool rows, bool need_coef, bool need_scale, "
      "Tensor(a!) grad_x) -> (Tensor, Tensor)");
  m.def("coefficients(Tensor s, Tensor init, Tensor lambda_, Tensor(a!) out) -> ()");
  m.def("coefficients_backward(Tensor sums, Tensor s, Tensor init, Tensor lambda_, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(dyrelu_native, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
  m.impl("coefficients", &coefficients);
  m.impl("coefficients_backward", &coefficients_backward);
}
