//! The CUDA kernels of `kernels/`, run on the CPU through `berth-kernel-emu` (the
//! same sources nvcc compiles, against an emulation of the CUDA execution model),
//! against the CPU fused ops. `cargo test -p berth-model emulated` runs them all.

use berth_kernel_emu::{Build, DropoutArgs, Launch, dropout_bf16, dropout_f32};
use berth_model::fused::{DropoutKey, dropout};
use candle_core::{DType, Device, Tensor};

fn args(k: &DropoutKey) -> DropoutArgs {
    DropoutArgs {
        seed: k.seed,
        site: k.site,
        threshold: k.threshold(),
        scale: k.scale(),
        offset: k.offset,
        rows: k.rows.unwrap_or((0, 1)),
    }
}

fn key(seed: u64, site: u64, p: f32, offset: u64, rows: Option<(u64, u64)>) -> DropoutKey {
    DropoutKey {
        seed,
        site,
        p,
        rows,
        offset,
    }
}

/// Keys over several seeds, sites (beyond 32 bits too), probabilities, offsets and a
/// row map (the first tokens of a `[B, L, H]` site).
fn keys() -> Vec<DropoutKey> {
    vec![
        key(0, 0, 0.1, 0, None),
        key((42 << 33) | 7, 3, 0.5, 12_345, None),
        key(9, 1 << 40, 0.25, 0, Some((768, 128))),
        key(u64::MAX, 17, 0.9, 64 * 1000 + 5, None),
    ]
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32) * 0.377).sin() * 3.0 + if i % 7 == 0 { -0.5 } else { 0.25 })
        .collect()
}

fn cpu_f32(x: &[f32], k: DropoutKey) -> Vec<f32> {
    let t = Tensor::from_slice(x, x.len(), &Device::Cpu).unwrap();
    dropout(&t, k).unwrap().to_vec1::<f32>().unwrap()
}

fn cpu_bf16(x: &[half::bf16], k: DropoutKey) -> Vec<u16> {
    let t = Tensor::from_slice(x, x.len(), &Device::Cpu).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
    dropout(&t, k)
        .unwrap()
        .to_vec1::<half::bf16>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const LAUNCHES: [Launch; 4] = [
    Launch { grid: 1, block: 1 },
    Launch {
        grid: 3,
        block: 100,
    },
    Launch { grid: 7, block: 33 },
    Launch {
        grid: 4096,
        block: 256,
    },
];

#[test]
fn dropout_emulated_masks_are_the_cpu_op_s_bit_for_bit_over_a_million_elements() {
    let x = values(1_000_000);
    for k in keys() {
        let want = bits(&cpu_f32(&x, k));
        let got = bits(&dropout_f32(&x, &args(&k), LAUNCHES[3], Build::AsWritten));
        assert!(got == want, "{k:?}: the kernel's mask is not the CPU op's");
        let dropped = got.iter().filter(|&&b| b == 0 || b == 0x8000_0000).count();
        let share = dropped as f64 / x.len() as f64;
        assert!((share - k.p as f64).abs() < 0.01, "{k:?}: dropped {share}");
    }
}

#[test]
fn dropout_emulated_is_the_cpu_op_for_odd_sizes_and_launches() {
    for n in [1usize, 2, 63, 64, 65, 1000, 4097] {
        let x = values(n);
        for k in keys() {
            let want = bits(&cpu_f32(&x, k));
            for launch in LAUNCHES {
                let got = bits(&dropout_f32(&x, &args(&k), launch, Build::AsWritten));
                assert!(got == want, "n {n}, {launch:?}, {k:?}");
            }
        }
    }
}

#[test]
fn dropout_emulated_bf16_rounds_as_the_cpu_op() {
    let x: Vec<half::bf16> = values(70_001)
        .into_iter()
        .map(half::bf16::from_f32)
        .collect();
    let raw: Vec<u16> = x.iter().map(|v| v.to_bits()).collect();
    for k in keys() {
        let want = cpu_bf16(&x, k);
        for launch in [LAUNCHES[2], LAUNCHES[3]] {
            let got = dropout_bf16(&raw, &args(&k), launch, Build::AsWritten);
            assert!(got == want, "{launch:?}, {k:?}");
        }
    }
}

#[test]
fn dropout_emulated_with_a_shifted_index_is_caught() {
    // The negative test: the same kernel reading the next element's mask must not
    // pass the comparison the tests above make.
    let x = values(10_000);
    for k in keys() {
        let want = bits(&cpu_f32(&x, k));
        let got = bits(&dropout_f32(
            &x,
            &args(&k),
            LAUNCHES[3],
            Build::ShiftedIndex,
        ));
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert!(differ > 100, "{k:?}: only {differ} elements differ");
        let got = dropout_bf16(
            &x.iter()
                .map(|v| half::bf16::from_f32(*v).to_bits())
                .collect::<Vec<_>>(),
            &args(&k),
            LAUNCHES[3],
            Build::ShiftedIndex,
        );
        let want = cpu_bf16(
            &x.iter()
                .map(|v| half::bf16::from_f32(*v))
                .collect::<Vec<_>>(),
            k,
        );
        assert!(got != want, "{k:?}: the shifted bf16 kernel passed");
    }
}

mod bias_act {
    use super::*;
    use berth_kernel_emu::{
        Act, bias_act_backward_bf16, bias_act_backward_f32, bias_act_bf16, bias_act_f32,
        column_sum_f32,
    };
    use berth_model::Activation;
    use candle_core::Var;

    const ACTS: [(Act, Activation); 3] = [
        (Act::Gelu, Activation::Gelu),
        (Act::GeluTanh, Activation::GeluTanh),
        (Act::Relu, Activation::Relu),
    ];

    /// (y, dz, db) of the CPU op for `z` `[rows, width]`, `b` and upstream `g`.
    fn cpu(z: &[f32], b: &[f32], g: &[f32], act: Activation) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let w = b.len();
        let zv = Var::from_tensor(&Tensor::from_slice(z, (z.len() / w, w), &Device::Cpu).unwrap())
            .unwrap();
        let bv = Var::from_tensor(&Tensor::from_slice(b, w, &Device::Cpu).unwrap()).unwrap();
        let y = berth_model::fused::bias_act(zv.as_tensor(), bv.as_tensor(), act).unwrap();
        let gt = Tensor::from_slice(g, (z.len() / w, w), &Device::Cpu).unwrap();
        let grads = (&y * &gt).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (
            flat(&y),
            flat(grads.get(zv.as_tensor()).unwrap()),
            flat(grads.get(bv.as_tensor()).unwrap()),
        )
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Odd shapes: one row, one column, widths that are not multiples of a block.
    const SHAPES: [(usize, usize); 5] = [(1, 1), (1, 7), (3, 33), (37, 5), (16, 768)];

    #[test]
    fn bias_act_emulated_forward_and_backward_are_the_cpu_op_s_within_1e_5() {
        for (rows, w) in SHAPES {
            let z: Vec<f32> = values(rows * w).iter().map(|v| v * 1.3).collect();
            let b: Vec<f32> = values(w + 3)[3..].to_vec();
            let g: Vec<f32> = values(rows * w + 11)[11..].to_vec();
            for (act, cpu_act) in ACTS {
                let (y, dz, db) = cpu(&z, &b, &g, cpu_act);
                for launch in LAUNCHES {
                    let gy = bias_act_f32(&z, &b, act, launch, Build::AsWritten);
                    let gdz = bias_act_backward_f32(&z, &b, &g, act, launch);
                    let gdb = column_sum_f32(&gdz, w, launch);
                    let what = format!("{rows}x{w} {act:?} {launch:?}");
                    assert!(worst(&gy, &y) < 1e-5, "{what}: y off by {}", worst(&gy, &y));
                    assert!(
                        worst(&gdz, &dz) < 1e-5,
                        "{what}: dz off by {}",
                        worst(&gdz, &dz)
                    );
                    assert!(
                        worst(&gdb, &db) < 1e-4,
                        "{what}: db off by {}",
                        worst(&gdb, &db)
                    );
                }
            }
        }
    }

    #[test]
    fn bias_act_emulated_bf16_is_the_cpu_op_s_within_1e_2() {
        let bf =
            |v: &[f32]| -> Vec<half::bf16> { v.iter().map(|x| half::bf16::from_f32(*x)).collect() };
        let bits = |v: &[half::bf16]| -> Vec<u16> { v.iter().map(|x| x.to_bits()).collect() };
        let f32s = |v: &[u16]| -> Vec<f32> {
            v.iter()
                .map(|x| half::bf16::from_bits(*x).to_f32())
                .collect()
        };
        let (rows, w) = (37, 33);
        let (z, b, g) = (
            bf(&values(rows * w)),
            bf(&values(w)),
            bf(&values(rows * w + 5)[5..]),
        );
        for (act, cpu_act) in ACTS {
            let zt = Tensor::from_slice(&z, (rows, w), &Device::Cpu).unwrap();
            let bt = Tensor::from_slice(&b, w, &Device::Cpu).unwrap();
            let y: Vec<f32> = berth_model::fused::bias_act(&zt, &bt, cpu_act)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got = f32s(&bias_act_bf16(&bits(&z), &bits(&b), act, LAUNCHES[2]));
            let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                worst(&got, &y) <= 1e-2 * scale,
                "{act:?}: y off by {}",
                worst(&got, &y)
            );
            let zf: Vec<f32> = z.iter().map(|v| v.to_f32()).collect();
            let bfv: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
            let gf: Vec<f32> = g.iter().map(|v| v.to_f32()).collect();
            let (_, dz, _) = cpu(&zf, &bfv, &gf, cpu_act);
            let got = f32s(&bias_act_backward_bf16(
                &bits(&z),
                &bits(&b),
                &bits(&g),
                act,
                LAUNCHES[3],
            ));
            let scale = dz.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                worst(&got, &dz) <= 1e-2 * scale,
                "{act:?}: dz off by {}",
                worst(&got, &dz)
            );
        }
    }

    #[test]
    fn bias_act_emulated_with_a_shifted_index_is_caught() {
        let (rows, w) = (16, 33);
        let (z, b) = (values(rows * w), values(w));
        for (act, cpu_act) in ACTS {
            let (y, _, _) = cpu(&z, &b, &values(rows * w), cpu_act);
            let got = bias_act_f32(&z, &b, act, LAUNCHES[3], Build::ShiftedIndex);
            assert!(worst(&got, &y) > 1e-2, "{act:?}: the shifted kernel passed");
        }
    }
}

/// The row, attention and loss kernels, against the CPU fused ops: f32 within 1e-5
/// (of 1 + |value|), bf16 within 1e-2 (of the largest |value|).
mod rows {
    use super::{key, values};
    use berth_kernel_emu::{
        Build, Dropout, Elem, Launch, cross_entropy, cross_entropy_backward, dropout_f32,
        layer_norm, layer_norm_backward, softmax, softmax_backward,
    };
    use berth_model::fused::launch::{LN_ROWS_PER_CHUNK, REDUCE_BLOCK, row_block};
    use berth_model::fused::{DropoutKey, add_layer_norm, attention};
    use candle_core::{DType, Device, Tensor, Var};

    fn dropout_arg(k: Option<&DropoutKey>) -> Dropout {
        k.map_or(Dropout::default(), |k| Dropout::from(&super::args(k)))
    }

    /// The largest |a - b| / (1 + |b|).
    fn worst_rel(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        let w = worst_rel(got, want);
        assert!(w <= tol, "{what}: off by {w} (tolerance {tol})");
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u16> {
        v.iter()
            .map(|x| half::bf16::from_f32(*x).to_bits())
            .collect()
    }
    fn unbits(v: &[u16]) -> Vec<f32> {
        v.iter()
            .map(|x| half::bf16::from_bits(*x).to_f32())
            .collect()
    }
    /// `v` rounded to bf16 and back.
    fn bf(v: &[f32]) -> Vec<f32> {
        unbits(&bits(v))
    }

    /// A launch of `grid` blocks (fewer than the rows exercises the grid-stride loop)
    /// with the block the CUDA path picks for rows of `width`.
    fn rows_launch(grid: u32, width: usize) -> Launch {
        Launch {
            grid,
            block: row_block(width).unwrap(),
        }
    }

    // ---- LayerNorm

    struct LnCase {
        rows: usize,
        h: usize,
        residual: bool,
        dropout: Option<DropoutKey>,
    }

    fn ln_cases() -> Vec<LnCase> {
        let mut cases = Vec::new();
        for (rows, h) in [(1, 1), (3, 7), (5, 37), (2, 300), (9, 768), (2, 2100)] {
            for residual in [false, true] {
                for dropout in [None, Some(key(11, 5, 0.2, 3, None))] {
                    cases.push(LnCase {
                        rows,
                        h,
                        residual,
                        dropout,
                    });
                }
            }
        }
        cases
    }

    /// The CPU op's (y, dx, dr, dwb) in `dtype`, from f32 values.
    #[allow(clippy::type_complexity)]
    fn ln_cpu(
        c: &LnCase,
        x: &[f32],
        r: &[f32],
        wb: &[f32],
        dy: &[f32],
        dtype: DType,
    ) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>, Vec<f32>) {
        let t = |v: &[f32], s: (usize, usize)| {
            Var::from_tensor(
                &Tensor::from_slice(v, s, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        let (xv, rv) = (t(x, (c.rows, c.h)), t(r, (c.rows, c.h)));
        let (wv, bv) = (t(&wb[..c.h], (1, c.h)), t(&wb[c.h..], (1, c.h)));
        let y = add_layer_norm(
            xv.as_tensor(),
            c.residual.then(|| rv.as_tensor()),
            &wv.as_tensor().squeeze(0).unwrap(),
            &bv.as_tensor().squeeze(0).unwrap(),
            1e-12,
            c.dropout,
        )
        .unwrap();
        let g = Tensor::from_slice(dy, (c.rows, c.h), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let grads = (&y * &g)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut dwb = flat(grads.get(wv.as_tensor()).unwrap());
        dwb.extend(flat(grads.get(bv.as_tensor()).unwrap()));
        (
            flat(&y),
            flat(grads.get(xv.as_tensor()).unwrap()),
            c.residual.then(|| flat(grads.get(rv.as_tensor()).unwrap())),
            dwb,
        )
    }

    fn ln_inputs(c: &LnCase) -> [Vec<f32>; 4] {
        let n = c.rows * c.h;
        let x: Vec<f32> = values(n).iter().map(|v| v * 1.7 + 0.3).collect();
        let r = values(n + 5)[5..].to_vec();
        let wb: Vec<f32> = values(2 * c.h + 9)[9..]
            .iter()
            .map(|v| v * 0.3 + 1.0)
            .collect();
        let dy = values(n + 13)[13..].to_vec();
        [x, r, wb, dy]
    }

    /// Runs the emulated kernels in storage type T (converting through f32).
    #[allow(clippy::type_complexity)]
    fn ln_emu<T: Elem>(
        c: &LnCase,
        [x, r, wb, dy]: &[Vec<f32>; 4],
        to: impl Fn(&[f32]) -> Vec<T>,
        from: impl Fn(&[T]) -> Vec<f32>,
        grid: u32,
        build: Build,
    ) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>, Vec<f32>) {
        let d = dropout_arg(c.dropout.as_ref());
        let launch = rows_launch(grid, c.h);
        let (xt, rt, wbt, dyt) = (to(x), to(r), to(wb), to(dy));
        let rr = c.residual.then_some(rt.as_slice());
        let (y, stats) = layer_norm(&xt, rr, &wbt, 1e-12, d, launch, build);
        let (dx, dr, dwb) = layer_norm_backward(
            &xt,
            rr,
            &wbt,
            &dyt,
            &stats,
            d,
            launch,
            // Small chunks on small cases, so that several chunks are added.
            (c.rows as u64 / 3).clamp(1, LN_ROWS_PER_CHUNK as u64),
            build,
        );
        (from(&y), from(&dx), dr.map(|d| from(&d)), from(&dwb))
    }

    #[test]
    fn layer_norm_emulated_forward_and_backward_are_the_cpu_op_s_within_1e_5() {
        for c in ln_cases() {
            let inputs = ln_inputs(&c);
            let [x, r, wb, dy] = &inputs;
            let (y, dx, dr, dwb) = ln_cpu(&c, x, r, wb, dy, DType::F32);
            for grid in [1, 2, c.rows as u32] {
                let (gy, gdx, gdr, gdwb) = ln_emu(
                    &c,
                    &inputs,
                    |v| v.to_vec(),
                    |v| v.to_vec(),
                    grid,
                    Build::AsWritten,
                );
                let what = format!(
                    "{}x{} residual {} dropout {} grid {grid}",
                    c.rows,
                    c.h,
                    c.residual,
                    c.dropout.is_some()
                );
                assert_close(&format!("{what}: y"), &gy, &y, 1e-5);
                assert_close(&format!("{what}: dx"), &gdx, &dx, 1e-5);
                assert_eq!(gdr.is_some(), dr.is_some());
                if let (Some(g), Some(w)) = (gdr, &dr) {
                    assert_close(&format!("{what}: dr"), &g, w, 1e-5);
                }
                assert_close(&format!("{what}: dwb"), &gdwb, &dwb, 1e-5);
            }
        }
    }

    /// bf16 storage: the CPU op in bf16 against the kernels' bf16 build, within 1e-2
    /// of each output's largest magnitude.
    fn assert_bf16(what: &str, got: &[f32], want: &[f32]) {
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let w = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(w <= 1e-2 * scale, "{what}: off by {w} (scale {scale})");
    }

    #[test]
    fn layer_norm_emulated_bf16_is_the_cpu_op_s_within_1e_2() {
        for c in ln_cases().into_iter().filter(|c| c.h > 1) {
            let inputs = ln_inputs(&c).map(|v| bf(&v));
            let [x, r, wb, dy] = &inputs;
            let (y, dx, dr, dwb) = ln_cpu(&c, x, r, wb, dy, DType::BF16);
            let (gy, gdx, gdr, gdwb) = ln_emu(&c, &inputs, bits, unbits, 2, Build::AsWritten);
            let what = format!("{}x{} residual {}", c.rows, c.h, c.residual);
            assert_bf16(&format!("{what}: y"), &gy, &y);
            assert_bf16(&format!("{what}: dx"), &gdx, &dx);
            if let (Some(g), Some(w)) = (gdr, dr) {
                assert_bf16(&format!("{what}: dr"), &g, &w);
            }
            assert_bf16(&format!("{what}: dwb"), &gdwb, &dwb);
        }
    }

    #[test]
    fn layer_norm_emulated_with_a_shifted_index_is_caught() {
        let c = LnCase {
            rows: 9,
            h: 768,
            residual: true,
            dropout: None,
        };
        let inputs = ln_inputs(&c);
        let [x, r, wb, dy] = &inputs;
        let (y, _, _, _) = ln_cpu(&c, x, r, wb, dy, DType::F32);
        let (gy, ..) = ln_emu(
            &c,
            &inputs,
            |v| v.to_vec(),
            |v| v.to_vec(),
            3,
            Build::ShiftedIndex,
        );
        assert!(worst_rel(&gy, &y) > 1e-2, "the shifted kernel passed");
    }

    // ---- The attention core: the softmax kernels between gemms the test does (as
    // cuBLAS does them on the GPU), against the fused CPU op end to end.

    /// `c[m, n] = sum_k a(i, k) b(k, j)` with accessors, in f64 rounded to f32.
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for t in 0..k {
                    s += a(i, t) as f64 * b(t, j) as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    struct AttnCase {
        b: usize,
        l: usize,
        heads: usize,
        d: usize,
        masked: bool,
        dropout: Option<DropoutKey>,
    }

    /// (context, dq, dk, dv) through the emulated kernels, storage T for S, P and dS.
    #[allow(clippy::type_complexity)]
    fn attn_emu<T: Elem>(
        c: &AttnCase,
        [q, k, v, dout]: [&[f32]; 4],
        mask: Option<&[f32]>,
        to: impl Fn(&[f32]) -> Vec<T>,
        from: impl Fn(&[T]) -> Vec<f32>,
        build: Build,
    ) -> [Vec<f32>; 4] {
        let (l, d, hd) = (c.l, c.d, c.heads * c.d);
        let at =
            |t: &[f32], b: usize, h: usize, i: usize, j: usize| t[(b * l + i) * hd + h * d + j];
        let scale = 1.0 / (d as f32).sqrt();
        let drop = dropout_arg(c.dropout.as_ref());
        // S [B, heads, L, L] = Q K^T, then the forward rows.
        let mut s = Vec::new();
        for b in 0..c.b {
            for h in 0..c.heads {
                s.extend(gemm(
                    l,
                    l,
                    d,
                    |i, t| at(q, b, h, i, t),
                    |t, j| at(k, b, h, j, t),
                ));
            }
        }
        let launch = rows_launch(3, l);
        let (p, pd) = softmax(&to(&s), mask, l, c.heads, scale, drop, launch, build);
        let (p, pd) = (from(&p), from(&pd));
        // O = P_d V into [B, L, heads d].
        let mut o = vec![0f32; c.b * l * hd];
        let (mut dq, mut dk, mut dv) = (o.clone(), o.clone(), o.clone());
        // dP_d = dO V^T per head.
        let mut dpd = Vec::new();
        for b in 0..c.b {
            for h in 0..c.heads {
                let ph = &pd[(b * c.heads + h) * l * l..][..l * l];
                let oh = gemm(l, d, l, |i, t| ph[i * l + t], |t, j| at(v, b, h, t, j));
                for i in 0..l {
                    o[(b * l + i) * hd + h * d..][..d].copy_from_slice(&oh[i * d..][..d]);
                }
                dpd.extend(gemm(
                    l,
                    l,
                    d,
                    |i, t| at(dout, b, h, i, t),
                    |t, j| at(v, b, h, j, t),
                ));
            }
        }
        let ds = from(&softmax_backward(
            &to(&p),
            &to(&dpd),
            l,
            scale,
            drop,
            launch,
            build,
        ));
        // P_d again, from P through the dropout kernel, as the backward does it.
        let pd_again = match &c.dropout {
            Some(key) => dropout_f32(&p, &super::args(key), Launch { grid: 4, block: 64 }, build),
            None => p.clone(),
        };
        assert_eq!(
            bf_or_same(&pd_again, &pd),
            pd,
            "P_d from P is the forward's P_d"
        );
        for b in 0..c.b {
            for h in 0..c.heads {
                let base = (b * c.heads + h) * l * l;
                let dsh = &ds[base..][..l * l];
                let pdh = &pd[base..][..l * l];
                let dqh = gemm(l, d, l, |i, t| dsh[i * l + t], |t, j| at(k, b, h, t, j));
                let dkh = gemm(l, d, l, |i, t| dsh[t * l + i], |t, j| at(q, b, h, t, j));
                let dvh = gemm(l, d, l, |i, t| pdh[t * l + i], |t, j| at(dout, b, h, t, j));
                for i in 0..l {
                    let at = (b * l + i) * hd + h * d;
                    dq[at..][..d].copy_from_slice(&dqh[i * d..][..d]);
                    dk[at..][..d].copy_from_slice(&dkh[i * d..][..d]);
                    dv[at..][..d].copy_from_slice(&dvh[i * d..][..d]);
                }
            }
        }
        [o, dq, dk, dv]
    }

    /// The regenerated P_d in the forward's rounding: bf16 probabilities times the mask
    /// factor round again when stored; f32 stays as it is.
    fn bf_or_same(again: &[f32], fwd: &[f32]) -> Vec<f32> {
        let rounded = bf(again);
        if rounded == fwd {
            rounded
        } else {
            again.to_vec()
        }
    }

    fn attn_cpu(
        c: &AttnCase,
        [q, k, v, dout]: [&[f32]; 4],
        mask: Option<&[f32]>,
        dtype: DType,
    ) -> [Vec<f32>; 4] {
        let shape = (c.b, c.l, c.heads * c.d);
        let t = |x: &[f32]| {
            Var::from_tensor(
                &Tensor::from_slice(x, shape, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        let (qv, kv, vv) = (t(q), t(k), t(v));
        let out = attention(
            qv.as_tensor(),
            kv.as_tensor(),
            vv.as_tensor(),
            c.heads,
            mask.map(<[f32]>::to_vec),
            c.dropout,
        )
        .unwrap();
        let g = Tensor::from_slice(dout, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let grads = (&out * &g)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        [
            flat(&out),
            flat(grads.get(qv.as_tensor()).unwrap()),
            flat(grads.get(kv.as_tensor()).unwrap()),
            flat(grads.get(vv.as_tensor()).unwrap()),
        ]
    }

    fn attn_cases() -> Vec<AttnCase> {
        let mut cases = Vec::new();
        for (b, l, heads, d) in [(1, 1, 1, 4), (2, 5, 2, 3), (2, 33, 3, 8), (1, 130, 2, 16)] {
            for masked in [false, true] {
                for dropout in [None, Some(key(7, 9, 0.1, 0, None))] {
                    cases.push(AttnCase {
                        b,
                        l,
                        heads,
                        d,
                        masked,
                        dropout,
                    });
                }
            }
        }
        cases
    }

    /// HF's additive mask: 0 where attended, f32::MIN on padding (the last keys of
    /// every other sequence; never all of one).
    fn attn_mask(c: &AttnCase) -> Option<Vec<f32>> {
        c.masked.then(|| {
            (0..c.b * c.l)
                .map(|i| {
                    let (b, j) = (i / c.l, i % c.l);
                    if b % 2 == 1 && j > 0 && j >= c.l / 2 {
                        f32::MIN
                    } else {
                        0.0
                    }
                })
                .collect()
        })
    }

    fn attn_inputs(c: &AttnCase) -> [Vec<f32>; 4] {
        let n = c.b * c.l * c.heads * c.d;
        [0, 3, 8, 17].map(|o| values(n + o)[o..].iter().map(|v| v * 0.6).collect())
    }

    #[test]
    fn attention_emulated_forward_and_backward_are_the_cpu_op_s_within_1e_5() {
        for c in attn_cases() {
            let inputs = attn_inputs(&c);
            let ins = [&inputs[0][..], &inputs[1], &inputs[2], &inputs[3]];
            let mask = attn_mask(&c);
            let want = attn_cpu(&c, ins, mask.as_deref(), DType::F32);
            let got = attn_emu(
                &c,
                ins,
                mask.as_deref(),
                |v| v.to_vec(),
                |v| v.to_vec(),
                Build::AsWritten,
            );
            for (name, (g, w)) in ["context", "dq", "dk", "dv"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                let what = format!(
                    "B {} L {} heads {} d {} masked {} dropout {}: {name}",
                    c.b,
                    c.l,
                    c.heads,
                    c.d,
                    c.masked,
                    c.dropout.is_some()
                );
                assert_close(&what, g, w, 1e-5);
            }
        }
    }

    #[test]
    fn attention_emulated_bf16_is_the_cpu_op_s_within_1e_2() {
        for c in attn_cases().into_iter().filter(|c| c.l > 1) {
            let inputs = attn_inputs(&c).map(|v| bf(&v));
            let ins = [&inputs[0][..], &inputs[1], &inputs[2], &inputs[3]];
            let mask = attn_mask(&c);
            let want = attn_cpu(&c, ins, mask.as_deref(), DType::BF16);
            let got = attn_emu(&c, ins, mask.as_deref(), bits, unbits, Build::AsWritten);
            for (name, (g, w)) in ["context", "dq", "dk", "dv"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                assert_bf16(
                    &format!("B {} L {} masked {}: {name}", c.b, c.l, c.masked),
                    g,
                    w,
                );
            }
        }
    }

    #[test]
    fn attention_emulated_with_a_shifted_index_is_caught() {
        let c = AttnCase {
            b: 2,
            l: 33,
            heads: 3,
            d: 8,
            masked: true,
            dropout: None,
        };
        let inputs = attn_inputs(&c);
        let ins = [&inputs[0][..], &inputs[1], &inputs[2], &inputs[3]];
        let mask = attn_mask(&c);
        let want = attn_cpu(&c, ins, mask.as_deref(), DType::F32);
        let got = attn_emu(
            &c,
            ins,
            mask.as_deref(),
            |v| v.to_vec(),
            |v| v.to_vec(),
            Build::ShiftedIndex,
        );
        assert!(
            worst_rel(&got[0], &want[0]) > 1e-2,
            "the shifted kernel passed"
        );
    }

    // ---- Cross-entropy

    fn ce_cpu(x: &[f32], labels: &[i64], dtype: DType) -> (f32, Vec<f32>) {
        let c = x.len() / labels.len();
        let xv = Var::from_tensor(
            &Tensor::from_slice(x, (labels.len(), c), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let loss = berth_model::fused::cross_entropy(xv.as_tensor(), labels).unwrap();
        let grads = (&loss * 1.5).unwrap().backward().unwrap();
        (
            loss.to_scalar::<f32>().unwrap(),
            flat(grads.get(xv.as_tensor()).unwrap()),
        )
    }

    /// (rows, classes, labels): a kept and an ignored label per few rows, one class,
    /// a vocabulary wider than the block, every row ignored.
    fn ce_cases() -> Vec<(usize, Vec<i64>)> {
        let labels = |n: usize, c: usize| -> Vec<i64> {
            (0..n)
                .map(|i| {
                    if i % 3 == 1 {
                        -100
                    } else {
                        ((i * 7) % c) as i64
                    }
                })
                .collect()
        };
        vec![
            (1, labels(1, 1)),
            (2, labels(5, 2)),
            (37, labels(9, 37)),
            (1000, labels(6, 1000)),
            (5, vec![-100; 4]),
        ]
    }

    #[test]
    fn cross_entropy_emulated_forward_and_backward_are_the_cpu_op_s_within_1e_5() {
        for (c, labels) in ce_cases() {
            let x: Vec<f32> = values(labels.len() * c).iter().map(|v| v * 2.0).collect();
            let (loss, dx) = ce_cpu(&x, &labels, DType::F32);
            for grid in [1, 2, labels.len() as u32] {
                let launch = Launch {
                    grid,
                    block: REDUCE_BLOCK,
                };
                let (gl, lse) = cross_entropy(&x, &labels, launch, REDUCE_BLOCK, Build::AsWritten);
                let gdx = cross_entropy_backward(&x, &labels, &lse, 1.5, launch, Build::AsWritten);
                let what = format!("{} rows of {c} classes, grid {grid}", labels.len());
                assert_close(&format!("{what}: loss"), &[gl], &[loss], 1e-5);
                assert_close(&format!("{what}: dx"), &gdx, &dx, 1e-5);
            }
        }
    }

    #[test]
    fn cross_entropy_emulated_bf16_is_the_cpu_op_s_within_1e_2() {
        for (c, labels) in ce_cases() {
            let x = bf(&values(labels.len() * c)
                .iter()
                .map(|v| v * 2.0)
                .collect::<Vec<_>>());
            let (loss, dx) = ce_cpu(&x, &labels, DType::BF16);
            let launch = Launch { grid: 2, block: 64 };
            let (gl, lse) = cross_entropy(&bits(&x), &labels, launch, 32, Build::AsWritten);
            let gdx =
                cross_entropy_backward(&bits(&x), &labels, &lse, 1.5, launch, Build::AsWritten);
            assert_bf16(&format!("{c} classes: loss"), &[gl], &[loss]);
            assert_bf16(&format!("{c} classes: dx"), &unbits(&gdx), &dx);
        }
    }

    #[test]
    fn cross_entropy_emulated_with_a_shifted_index_is_caught() {
        let (c, labels) = ce_cases().swap_remove(2);
        let x: Vec<f32> = values(labels.len() * c).iter().map(|v| v * 2.0).collect();
        let (_, dx) = ce_cpu(&x, &labels, DType::F32);
        let launch = Launch {
            grid: 2,
            block: REDUCE_BLOCK,
        };
        let (_, lse) = cross_entropy(&x, &labels, launch, REDUCE_BLOCK, Build::ShiftedIndex);
        let got = cross_entropy_backward(&x, &labels, &lse, 1.5, launch, Build::ShiftedIndex);
        assert!(worst_rel(&got, &dx) > 1e-2, "the shifted kernel passed");
    }
}
