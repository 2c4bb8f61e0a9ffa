//! `y = x W^T (+ b)` as one gemm whose destination starts as the bias rows; the
//! backward is two gemms and a column sum, with no transposed copies of W.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{Mat, err, f32_view, sgemm, sgemm_ptr, storage_of, tensor_like, with_f32s, written_by};

struct Linear;

fn out_shape(x: &Layout, w: &Layout) -> candle_core::Result<(usize, usize, usize, Shape)> {
    let (out, inp) = w.shape().dims2()?;
    let dims = x.shape().dims();
    if dims.last() != Some(&inp) {
        return Err(err(format!(
            "linear: input {:?} does not end in the weight's {inp} inputs",
            dims
        )));
    }
    let n: usize = dims[..dims.len() - 1].iter().product();
    let mut od = dims.to_vec();
    *od.last_mut().expect("rank >= 1") = out;
    Ok((n, inp, out, Shape::from(od)))
}

/// The op's forward for either arity: `x W^T`, plus `b` when given.
fn cpu_forward(
    (xs, xl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (n, inp, out, shape) = out_shape(xl, wl)?;
    let x = f32_view(xs, xl, "linear input")?;
    let w = f32_view(ws, wl, "linear weight")?;
    let b = match bias {
        Some((_, bl)) if bl.shape().elem_count() != out => {
            return Err(err(format!(
                "linear: bias {:?} for {out} outputs",
                bl.shape()
            )));
        }
        Some((bs, bl)) => Some(f32_view(bs, bl, "linear bias")?),
        None => None,
    };
    // The destination starts as the bias rows, so the gemm adds the product to them.
    let mut y = match &b {
        Some(b) => repeat_rows(b, n),
        None => super::zeros(n * out),
    };
    // W^T read in place strides `inp` floats between columns. From ~1024 inputs on
    // (4 KiB and more: BERT's feed-forward output, 3072) gemm's packing of such a
    // matrix thrashes the cache and the product ran at half speed (26 ms against 14
    // for 512 x 3072 x 768 on the 2-core machine); a transposed copy costs ~1 ms.
    let wt;
    let rhs = if inp >= TRANSPOSE_FROM && n >= TRANSPOSE_FROM / 4 {
        wt = transpose(&w, out, inp);
        Mat::rows(&wt, out)
    } else {
        Mat::t(&w, inp)
    };
    sgemm(
        n,
        out,
        inp,
        &mut y,
        out,
        b.is_some(),
        Mat::rows(&x, inp),
        rhs,
        1.0,
        true,
    );
    Ok((storage_of(y, xs.dtype())?, shape))
}

/// `n` copies of `row`, written on rayon's threads (1.5 M values for BERT's
/// feed-forward layer at 512 tokens: serial, it left the other core idle).
fn repeat_rows(row: &[f32], n: usize) -> Vec<f32> {
    let w = row.len();
    if w == 0 || n == 0 {
        return Vec::new();
    }
    // SAFETY: a block is whole rows of w, and each row is written from `row`.
    unsafe {
        super::par_init(n * w, super::rows_per_task(w) * w, |_, block| {
            for dst in block.chunks_mut(w) {
                for (d, &x) in dst.iter_mut().zip(row) {
                    d.write(x);
                }
            }
        })
    }
}

/// Inputs from which the forward multiplies by a transposed copy of W.
const TRANSPOSE_FROM: usize = 1024;

/// `src` (`rows x cols`, row-major) transposed into a new `cols x rows` buffer, in
/// 32 x 32 tiles so that reads and writes both stay in cache, rows of tiles in
/// parallel.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // Task tc writes dst rows tc*T.., i.e. columns tc*T.. of src, every element once.
    // Each tile reads src a row at a time: its rows are `cols` apart, and at 3072
    // columns (12 KiB, a multiple of 4 KiB) reading down a column hit one L1 set 32
    // times over.
    // SAFETY: block tc is dst rows c0..c0 + cn (cn * rows elements), and the loops write
    // (c, r) for every c < cn and r < rows.
    unsafe {
        super::par_init(rows * cols, T * rows, |tc, block| {
            let c0 = tc * T;
            let cn = (cols - c0).min(T);
            for r0 in (0..rows).step_by(T) {
                let rn = (rows - r0).min(T);
                for r in r0..r0 + rn {
                    let srow = &src[r * cols + c0..r * cols + c0 + cn];
                    for (c, &v) in srow.iter().enumerate() {
                        block[c * rows + r].write(v);
                    }
                }
            }
        })
    }
}

/// (dx, dw, db) from dy; db in `bias`'s dtype when there is a bias.
fn backward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    grad: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (out, inp) = w.dims2()?;
    let xd = x.dims();
    let n: usize = xd[..xd.len().saturating_sub(1)].iter().product();
    with_f32s([grad, x, w], |[dy, xs, ws]| {
        let (dyv, wv, xv) = (Mat::rows(dy, out), Mat::rows(ws, inp), Mat::rows(xs, inp));
        assert!(
            dyv.fits(n, out) && wv.fits(out, inp) && xv.fits(n, inp),
            "linear backward: an operand is smaller than its shape"
        );
        // SAFETY: a gemm that does not accumulate writes every element of its
        // `m x n` destination (row stride n) and reads none; the views fit (above).
        let dx = unsafe {
            written_by(n * inp, |p| {
                sgemm_ptr(n, inp, out, p, inp, false, dyv, wv, 1.0, true)
            })
        };
        // SAFETY: as above.
        let dw = unsafe {
            written_by(out * inp, |p| {
                sgemm_ptr(out, inp, n, p, inp, false, Mat::t(dy, out), xv, 1.0, true)
            })
        };
        let db = match bias {
            Some(b) => {
                // Column sums of dy, as a gemm with a row of ones.
                let ones = vec![1f32; n];
                let mut db = vec![0f32; out];
                sgemm(
                    1,
                    out,
                    n,
                    &mut db,
                    out,
                    false,
                    Mat::rows(&ones, n),
                    Mat::rows(dy, out),
                    1.0,
                    true,
                );
                Some(tensor_like(db, out, b.dtype())?)
            }
            None => None,
        };
        Ok((
            Some(tensor_like(dx, x.shape(), x.dtype())?),
            Some(tensor_like(dw, (out, inp), w.dtype())?),
            db,
        ))
    })
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "berth-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_forward((xs, xl), (ws, wl), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, None, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "berth-linear-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_forward((xs, xl), (ws, wl), Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward(x, w, Some(b), grad)
    }
}

/// `x W^T + b` over the last dimension of `x`, W as `[out, in]` (PyTorch's layout).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, Linear),
        None => x.apply_op2(&w, Linear),
    }
}
