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
