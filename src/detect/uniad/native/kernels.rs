//! The network's kernels: dense layers (packed panels, register-blocked), attention,
//! LayerNorm and GELU, compiled once for any CPU and once with AVX2 + FMA.

use super::{
    grow, grow8, Attention, Dense, Layer, Mix, NativeModel, Norm, Scratch, Tmp, LANES, PANEL,
    PORTABLE_FMA,
};
use crate::detect::onnx_proto::exp;

// ---------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------

/// The network's functions, compiled once per instruction set: `kernels!(attrs; WIDE)`
/// defines `chunk` and the kernels it calls, each with `attrs` (the target features),
/// over the shared `inline(always)` implementations below. Functions with the same
/// target features call each other safely, so only the entry point needs `unsafe`.
macro_rules! kernels {
    ($(#[$attr:meta])* ; $wide:expr) => {
        use super::*;

        /// The whole network on `ents` entities of `n` tokens.
        $(#[$attr])*
        pub(in super::super) fn chunk(
            m: &NativeModel,
            x: &[f32],
            ents: usize,
            n: usize,
            out: &mut [f32],
            s: &mut Scratch,
        ) {
            let t = ents * n;
            let w = m.w;
            let x: &[f32] = match &m.mask {
                Some(mask) => {
                    let xin = grow(&mut s.xin, t * w);
                    for (row, src) in xin.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
                        for ((o, &v), &k) in row.iter_mut().zip(src).zip(mask) {
                            *o = v * k;
                        }
                    }
                    &s.xin[..t * w]
                }
                None => x,
            };
            let h2 = 2 * m.h;
            let mut z = std::mem::take(&mut s.z);
            let zs = grow(&mut z, t * h2);
            let mut pa = std::mem::take(&mut s.pa);
            let mut pb = std::mem::take(&mut s.pb);
            // Transformer branch -> z[:, ..h]; Base branch -> z[:, h..].
            for (layers, head, col0) in [(&m.trans, &m.trans_out, 0), (&m.base, &m.base_out, m.h)] {
                let last = stack(layers, x, t, n, &mut pa, &mut pb, &mut s.tmp);
                dense(last, t, head, zs, h2, col0, None);
            }
            let last = stack(&m.dec, zs, t, n, &mut pa, &mut pb, &mut s.tmp);
            dense(last, t, &m.dec_out, out, w, 0, None);
            s.z = z;
            s.pa = pa;
            s.pb = pb;
        }

        /// Runs `layers` one after the other from `x`; returns the last output.
        $(#[$attr])*
        fn stack<'b>(
            layers: &[Layer],
            x: &[f32],
            t: usize,
            n: usize,
            pa: &'b mut Vec<f32>,
            pb: &'b mut Vec<f32>,
            tmp: &mut Tmp,
        ) -> &'b [f32] {
            let mut len = 0;
            for (i, l) in layers.iter().enumerate() {
                let dout = l.d_out();
                if i == 0 {
                    let out = grow(pa, t * dout);
                    layer(l, x, t, n, out, tmp);
                } else {
                    let out = grow(pb, t * dout);
                    layer(l, &pa[..len], t, n, out, tmp);
                    std::mem::swap(pa, pb);
                }
                len = t * dout;
            }
            &pa[..len]
        }

        $(#[$attr])*
        fn layer(l: &Layer, x: &[f32], t: usize, n: usize, out: &mut [f32], tmp: &mut Tmp) {
            let (din, dout) = (l.d_in(), l.d_out());
            let x1 = grow(&mut tmp.x1, t * din);
            match &l.mix {
                Mix::Attention(a) => {
                    let qkv = grow(&mut tmp.qkv, t * 3 * din);
                    dense(x, t, &a.qkv, qkv, 3 * din, 0, None);
                    let att = grow(&mut tmp.attn, t * din);
                    attention(a, qkv, t / n, n, att, &mut tmp.kt, &mut tmp.vp, &mut tmp.s);
                    dense(att, t, &a.o, x1, din, 0, Some(x));
                }
                Mix::Dense(m) => dense(x, t, m, x1, din, 0, Some(x)),
            }
            layer_norm(x1, din, &l.norm1);
            let y = grow(&mut tmp.y, t * dout);
            dense(x1, t, &l.reduce, y, dout, 0, None);
            let hh = grow(&mut tmp.hh, t * 2 * dout);
            dense(y, t, &l.ff0, hh, 2 * dout, 0, None);
            gelu(hh);
            dense(hh, t, &l.ff3, out, dout, 0, Some(y));
            layer_norm(out, dout, &l.norm2);
        }

        $(#[$attr])*
        pub(super) fn dense(
            a: &[f32],
            rows: usize,
            d: &Dense,
            c: &mut [f32],
            ldc: usize,
            col0: usize,
            res: Option<&[f32]>,
        ) {
            dense_impl::<$wide>(a, rows, d, c, ldc, col0, res)
        }

        $(#[$attr])*
        fn layer_norm(x: &mut [f32], d: usize, norm: &Norm) {
            layer_norm_impl(x, d, norm)
        }

        $(#[$attr])*
        fn gelu(x: &mut [f32]) {
            gelu_impl(x)
        }

        #[allow(clippy::too_many_arguments)]
        $(#[$attr])*
        fn attention(
            a: &Attention,
            qkv: &[f32],
            ents: usize,
            n: usize,
            out: &mut [f32],
            kt: &mut Vec<[f32; LANES]>,
            vp: &mut Vec<[f32; LANES]>,
            s: &mut Vec<f32>,
        ) {
            attention_impl::<$wide>(a, qkv, ents, n, out, kt, vp, s)
        }
    };
}

/// The kernels for any CPU (SSE2 on x86-64, NEON on aarch64).
pub(super) mod portable {
    kernels!(; false);
}

/// The kernels with AVX2 and FMA; callable only where `wide_supported()`.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    kernels!(#[target_feature(enable = "avx2,fma")]; true);
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// One small matrix product `C = A @ B (+ bias) (+ residual)` for the blocked kernel.
struct Gemm<'a> {
    /// Row `r` of A starts at `a[r · lda]` and has `k` values.
    a: &'a [f32],
    lda: usize,
    rows: usize,
    k: usize,
    /// B in panels of 8 columns: panel `p` is `panels[p·k..(p+1)·k]`.
    panels: &'a [[f32; PANEL]],
    /// Columns of C written (the last panel may be partial).
    cols: usize,
    /// Added to every row (at least `cols` values, padded to whole panels).
    bias: Option<&'a [f32]>,
    /// Added too: row `r` at `res[r · ldr]`.
    res: Option<(&'a [f32], usize)>,
}

/// `c[r · ldc + col0 + j] = (A @ B)[r, j] (+ bias[j]) (+ res[r, j])`.
#[inline(always)]
fn gemm<const WIDE: bool>(g: &Gemm<'_>, c: &mut [f32], ldc: usize, col0: usize) {
    let mut i = 0;
    while i + 4 <= g.rows {
        row_block::<4, WIDE>(g, i, c, ldc, col0);
        i += 4;
    }
    match g.rows - i {
        3 => row_block::<3, WIDE>(g, i, c, ldc, col0),
        2 => row_block::<2, WIDE>(g, i, c, ldc, col0),
        1 => row_block::<1, WIDE>(g, i, c, ldc, col0),
        _ => {}
    }
}

/// A dense layer on `rows` tokens: `c[r, col0 + j] = a[r, :] @ W[:, j] + b[j]
/// (+ res[r, j])`, `a` `[rows, k]`, `c` row stride `ldc`, `res` row stride `d.n`.
#[inline(always)]
fn dense_impl<const WIDE: bool>(
    a: &[f32],
    rows: usize,
    d: &Dense,
    c: &mut [f32],
    ldc: usize,
    col0: usize,
    res: Option<&[f32]>,
) {
    let g = Gemm {
        a,
        lda: d.k,
        rows,
        k: d.k,
        panels: &d.panels,
        cols: d.n,
        bias: Some(&d.bias),
        res: res.map(|r| (r, d.n)),
    };
    gemm::<WIDE>(&g, c, ldc, col0);
}

#[inline(always)]
fn row_block<const MR: usize, const WIDE: bool>(
    g: &Gemm<'_>,
    row0: usize,
    c: &mut [f32],
    ldc: usize,
    col0: usize,
) {
    let np = g.cols.div_ceil(PANEL);
    let mut p = 0;
    if WIDE || PORTABLE_FMA {
        // 16 columns at a time: 2·MR accumulators of 8 lanes (AVX2: one register each).
        while p + 2 <= np {
            let acc = micro::<MR, 2, true>(g, row0, p);
            store::<MR, 2>(g, &acc, row0, p, c, ldc, col0);
            p += 2;
        }
        if p < np {
            let acc = micro::<MR, 1, true>(g, row0, p);
            store::<MR, 1>(g, &acc, row0, p, c, ldc, col0);
        }
    } else {
        // SSE2: 8 columns are two registers already.
        while p < np {
            let acc = micro::<MR, 1, false>(g, row0, p);
            store::<MR, 1>(g, &acc, row0, p, c, ldc, col0);
            p += 1;
        }
    }
}

/// `MR` rows × `NP` panels of 8 columns of `A @ B`, accumulated over all of `k`.
#[inline(always)]
fn micro<const MR: usize, const NP: usize, const FMA: bool>(
    g: &Gemm<'_>,
    row0: usize,
    p0: usize,
) -> [[[f32; PANEL]; NP]; MR] {
    let k = g.k;
    let mut arows: [&[f32]; MR] = [&[]; MR];
    for (r, row) in arows.iter_mut().enumerate() {
        *row = &g.a[(row0 + r) * g.lda..][..k];
    }
    let mut bp: [&[[f32; PANEL]]; NP] = [&[]; NP];
    for (q, panel) in bp.iter_mut().enumerate() {
        *panel = &g.panels[(p0 + q) * k..][..k];
    }
    let mut acc = [[[0.0f32; PANEL]; NP]; MR];
    for kk in 0..k {
        let mut bv = [[0.0f32; PANEL]; NP];
        for q in 0..NP {
            bv[q] = bp[q][kk];
        }
        for r in 0..MR {
            let av = arows[r][kk];
            for q in 0..NP {
                for l in 0..PANEL {
                    acc[r][q][l] = madd::<FMA>(av, bv[q][l], acc[r][q][l]);
                }
            }
        }
    }
    acc
}

#[inline(always)]
fn store<const MR: usize, const NP: usize>(
    g: &Gemm<'_>,
    acc: &[[[f32; PANEL]; NP]; MR],
    row0: usize,
    p0: usize,
    c: &mut [f32],
    ldc: usize,
    col0: usize,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        let row = row0 + r;
        for (q, acc_q) in acc_r.iter().enumerate() {
            let j0 = (p0 + q) * PANEL;
            let mut v = *acc_q;
            if let Some(bias) = g.bias {
                let b = &bias[j0..j0 + PANEL];
                for l in 0..PANEL {
                    v[l] += b[l];
                }
            }
            if j0 + PANEL <= g.cols {
                if let Some((res, ldr)) = g.res {
                    let rs = &res[row * ldr + j0..][..PANEL];
                    for l in 0..PANEL {
                        v[l] += rs[l];
                    }
                }
                c[row * ldc + col0 + j0..][..PANEL].copy_from_slice(&v);
            } else {
                // The last, partial panel of a layer whose width is not a multiple of 8.
                for l in 0..g.cols - j0 {
                    let extra = g.res.map_or(0.0, |(res, ldr)| res[row * ldr + j0 + l]);
                    c[row * ldc + col0 + j0 + l] = v[l] + extra;
                }
            }
        }
    }
}

/// Sum of `x` with 8 independent partial sums (vectorisable).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

/// LayerNorm of every row of `x` (row length `d`), in place.
#[inline(always)]
fn layer_norm_impl(x: &mut [f32], d: usize, norm: &Norm) {
    let inv_d = 1.0 / d as f32;
    let (g, b) = (&norm.gamma[..d], &norm.beta[..d]);
    for row in x.chunks_exact_mut(d) {
        let mean = sum8(row) * inv_d;
        let mut acc = [0.0f32; 8];
        let chunks = row.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for l in 0..8 {
                let v = c[l] - mean;
                acc[l] += v * v;
            }
        }
        let mut ss =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for &v in rest {
            ss += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (ss * inv_d + norm.eps).sqrt();
        for ((v, &gi), &bi) in row.iter_mut().zip(g).zip(b) {
            *v = (*v - mean) * inv * gi + bi;
        }
    }
}

/// erf(x), the rational approximation of Eigen's `generic_fast_erf_float` (x clamped to
/// ±4) evaluated in f64: max abs error 6.5e-8 before the final rounding to f32.
#[inline(always)]
fn erf64(x: f64) -> f64 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_258_013_06e-10;
    p = p * x2 + 2.770_681_424_959_02e-8;
    p = p * x2 - 2.101_024_020_825_08e-6;
    p = p * x2 - 5.692_506_394_623_46e-5;
    p = p * x2 - 7.349_906_303_268_55e-4;
    p = p * x2 - 2.954_599_808_540_25e-3;
    p = p * x2 - 1.609_603_332_624_15e-2;
    let mut q = -1.456_607_184_649_96e-5;
    q = q * x2 - 2.133_740_552_789_05e-4;
    q = q * x2 - 1.682_826_974_382_03e-3;
    q = q * x2 - 7.373_329_167_204_68e-3;
    q = q * x2 - 1.426_473_905_141_89e-2;
    x * p / q
}

/// erf for f32 arguments (through [`erf64`]).
#[cfg(test)]
fn erf(x: f32) -> f32 {
    erf64(f64::from(x)) as f32
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))`, in place.
#[inline(always)]
fn gelu_impl(x: &mut [f32]) {
    for v in x.iter_mut() {
        let xd = f64::from(*v);
        *v = (0.5 * xd * (1.0 + erf64(xd * std::f64::consts::FRAC_1_SQRT_2))) as f32;
    }
}

/// Self-attention of every entity (`ents` × `n` tokens): `qkv` is `[t, 3d]` (Q | K | V),
/// `out` `[t, d]`, heads side by side. Per (entity, head), `S = Q Kᵀ` and `O = P V` run
/// through the blocked kernel: Kᵀ and V packed into panels of 8 keys / 8 features.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_impl<const WIDE: bool>(
    a: &Attention,
    qkv: &[f32],
    ents: usize,
    n: usize,
    out: &mut [f32],
    kt: &mut Vec<[f32; LANES]>,
    vp: &mut Vec<[f32; LANES]>,
    s: &mut Vec<f32>,
) {
    let (heads, hd) = (a.heads, a.hd);
    let d = heads * hd;
    let ld = 3 * d;
    // Keys in panels of 8 (the last one zero-padded, its scores masked out).
    let nc = n.div_ceil(LANES);
    let ncp = nc * LANES;
    let kt = grow8(kt, nc * hd);
    let vp = grow8(vp, (hd / LANES) * n);
    let s = grow(s, n * ncp);
    for e in 0..ents {
        let tok = &qkv[e * n * ld..(e + 1) * n * ld];
        let o_ent = &mut out[e * n * d..(e + 1) * n * d];
        for h in 0..heads {
            // kt[jc·hd + c][l] = K[jc·8 + l, h·hd + c]; vp[cc·n + j] = V[j, h·hd + cc·8..][..8].
            kt.fill([0.0; LANES]);
            for (j, row) in tok.chunks_exact(ld).enumerate() {
                let k = &row[d + h * hd..][..hd];
                let (jc, l) = (j / LANES, j % LANES);
                for (c, &kc) in k.iter().enumerate() {
                    kt[jc * hd + c][l] = kc;
                }
                let v = &row[2 * d + h * hd..][..hd];
                for (cc, vc) in v.chunks_exact(LANES).enumerate() {
                    vp[cc * n + j].copy_from_slice(vc);
                }
            }
            let scores = Gemm {
                a: &tok[h * hd..],
                lda: ld,
                rows: n,
                k: hd,
                panels: kt,
                cols: ncp,
                bias: None,
                res: None,
            };
            gemm::<WIDE>(&scores, s, ncp, 0);
            for row in s.chunks_exact_mut(ncp) {
                let (keys, pad) = row.split_at_mut(n);
                for v in keys.iter_mut() {
                    let x = *v * a.scale;
                    let x = if x < a.lo { a.lo } else { x };
                    let x = if x > a.hi { a.hi } else { x };
                    *v = exp(x);
                }
                pad.fill(0.0);
                let sum = sum8(keys);
                for v in row.iter_mut() {
                    *v /= sum;
                }
            }
            let mix = Gemm {
                a: s,
                lda: ncp,
                rows: n,
                k: n,
                panels: vp,
                cols: hd,
                bias: None,
                res: None,
            };
            gemm::<WIDE>(&mix, o_ent, d, h * hd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::wide_supported;
    use super::*;

    #[test]
    fn erf_is_within_1_2e_7_of_libm() {
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            let err = (f64::from(erf(x)) - libm::erf(f64::from(x))).abs();
            worst = worst.max(err);
        }
        assert!(worst <= 1.2e-7, "max abs error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(100.0), 1.0);
        assert_eq!(erf(-100.0), -1.0);
    }

    #[test]
    fn dense_kernel_matches_a_naive_product_for_every_shape() {
        // Shapes with row and column tails, with and without a residual, both kernels.
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for (rows, k, n) in [
            (1, 3, 5),
            (7, 16, 8),
            (9, 64, 192),
            (6, 32, 24),
            (13, 8, 17),
        ] {
            let w: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let a: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let r: Vec<f32> = (0..rows * n).map(|_| next()).collect();
            let d = Dense::new(&w, k, n, &b);
            let ldc = n + 3;
            for res in [None, Some(&r[..])] {
                let mut want = vec![0.0f32; rows * ldc];
                for i in 0..rows {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|kk| a[i * k + kk] * w[kk * n + j]).sum();
                        want[i * ldc + 2 + j] = dot + b[j] + res.map_or(0.0, |r| r[i * n + j]);
                    }
                }
                let mut got = vec![0.0f32; rows * ldc];
                portable::dense(&a, rows, &d, &mut got, ldc, 2, res);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(err < 1e-5, "portable {rows}x{k}x{n}: {err}");
                if wide_supported() {
                    let mut got = vec![0.0f32; rows * ldc];
                    wide_dense(&a, rows, &d, &mut got, ldc, res);
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    assert!(err < 1e-5, "avx2 {rows}x{k}x{n}: {err}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn wide_dense(
        a: &[f32],
        rows: usize,
        d: &Dense,
        c: &mut [f32],
        ldc: usize,
        res: Option<&[f32]>,
    ) {
        // SAFETY: called only when `wide_supported()` found AVX2 and FMA.
        #[allow(unsafe_code)]
        unsafe {
            avx2::dense(a, rows, d, c, ldc, 2, res)
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn wide_dense(_: &[f32], _: usize, _: &Dense, _: &mut [f32], _: usize, _: Option<&[f32]>) {}
}
