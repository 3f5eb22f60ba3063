"""Triton kernels of the fused field: nine-plane sampling plus a FusedDecoder-shaped MLP, per block of points.

Three kernels share ``_forward_block`` (features and both networks for ``BLOCK_M`` points, bf16 operands,
fp32 accumulation): ``_fused_forward_kernel`` (rgb_raw, sigma_raw), ``_fused_backward_kernel`` (recomputes
the forward, backpropagates through the MLP in registers and scatters d(features) into the fp32 plane
gradient with ``atomic_add``) and ``_fused_backward_wgrad_kernel`` (the same, plus d(loss)/d(weights) of
every packed matrix, summed per program: see its docstring). Layouts: ``runtime/fused_planes.py`` (planes),
``runtime/fused_weights.py`` (weights); launches: ``runtime/fused_field.py``.

The sampling reproduces ``sample_features`` (runtime/triplane.py): planes XY, XZ, ZY with (u, v) axes
(0, 1), (0, 2), (2, 1); group 0 at (u, v), group 1 at (u + 1/R, v), group 2 at (u, v + 1/R); bilinear,
zero padding, ``align_corners=False`` (pixel x = ((u + 1) R - 1) / 2, u along W, v along H).
"""

from __future__ import annotations

import os

import torch

try:  # the runtime must import without triton; the fused path then reports itself unavailable
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    libdevice = None


def triton_available() -> bool:
    """True when triton imports and kernels can run: on CUDA, or anywhere with ``TRITON_INTERPRET=1``."""
    if triton is None:
        return False
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
        return True
    return torch.cuda.is_available()


if triton is not None:

    @triton.jit
    def _log2(x):
        """log2; the fast ``lg2.approx`` on the GPU (the interpreter has no libdevice)."""
        if _INTERPRETED:
            return tl.log2(x)
        else:
            return libdevice.fast_log2f(x)

    @triton.jit
    def _sin(x):
        """sin; the fast ``sin.approx`` on the GPU (abs error ~1e-6 here, far below bf16's)."""
        if _INTERPRETED:
            return tl.sin(x)
        else:
            return libdevice.fast_sinf(x)

    @triton.jit
    def _softplus_parts(x):
        """``e = exp(-10 |x|)`` and softplus with beta 10, ``max(x, 0) + log(1 + e) / 10`` (stable)."""
        e = tl.exp2(tl.abs(x) * -14.426950408889634)  # 10 / ln 2
        return e, tl.maximum(x, 0.0) + _log2(1.0 + e) * 0.06931471805599453  # ln 2 / 10

    @triton.jit
    def _act(x, SOFTPLUS: tl.constexpr):
        """softplus with beta 10 (tiny-cuda-nn's) or relu, elementwise in fp32."""
        if SOFTPLUS:
            _, y = _softplus_parts(x)
            return y
        else:
            return tl.maximum(x, 0.0)

    @triton.jit
    def _act_and_grad(x, SOFTPLUS: tl.constexpr):
        """The activation and its derivative: sigmoid(10 x) for softplus, [x > 0] for relu (as torch)."""
        if SOFTPLUS:
            e, y = _softplus_parts(x)
            return y, tl.where(x >= 0.0, 1.0, e) / (1.0 + e)
        else:
            return tl.maximum(x, 0.0), tl.where(x > 0.0, 1.0, 0.0)

    @triton.jit
    def _matrix_offsets(K: tl.constexpr, N: tl.constexpr):
        """Element offsets ``[K, N]`` of a row-major ``[K, N]`` matrix."""
        return tl.arange(0, K)[:, None] * N + tl.arange(0, N)[None, :]

    @triton.jit
    def _load_w(ptr, K: tl.constexpr, N: tl.constexpr):
        """Row-major ``[K, N]`` matrix."""
        return tl.load(ptr + _matrix_offsets(K, N))

    @triton.jit
    def _load_wt(ptr, K: tl.constexpr, N: tl.constexpr):
        """The transpose ``[N, K]`` of a row-major ``[K, N]`` matrix (contiguous load, then a view)."""
        return tl.trans(_load_w(ptr, K, N))

    @triton.jit
    def _dot_bf16(a, b):
        """``a @ b`` with ``a`` rounded to bf16 (``b`` is bf16), fp32 accumulation."""
        if _INTERPRETED:  # the interpreter multiplies bf16 bit patterns as integers: go through fp32
            return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.float32), out_dtype=tl.float32)
        else:
            return tl.dot(a.to(tl.bfloat16), b, out_dtype=tl.float32)

    @triton.jit
    def _dense(h, w_ptr, K: tl.constexpr, N: tl.constexpr):
        """``h [BLOCK, K] @ W [K, N]``: bf16 operands, fp32 accumulation."""
        return _dot_bf16(h, _load_w(w_ptr, K, N))

    @triton.jit
    def _dense_t(g, w_ptr, K: tl.constexpr, N: tl.constexpr):
        """``g [BLOCK, N] @ W^T [N, K]`` for a row-major ``W [K, N]`` (backward through ``_dense``)."""
        return _dot_bf16(g, _load_wt(w_ptr, K, N))

    @triton.jit
    def _plane_uv(x, y, z, P: tl.constexpr):
        """(u, v) of points on plane P: XY, XZ, ZY."""
        if P == 0:
            return x, y
        elif P == 1:
            return x, z
        else:
            return z, y

    @triton.jit
    def _bilinear(u, v, R, P: tl.constexpr):
        """Bilinear taps of plane P's groups for points ``u, v [BLOCK]`` in [-1, 1].

        Returns ``x0, y0`` (int32), ``fx, fy`` (fp32) as ``[BLOCK, 4]`` (column = group; group 3 is
        padding), the texel offset of each group's plane ``[1, 4]`` and the group mask ``[1, 4]``.
        """
        rf = R * 1.0
        g = tl.arange(0, 4)[None, :]
        step = 1.0 / rf
        gu = u[:, None] + tl.where(g == 1, step, 0.0)
        gv = v[:, None] + tl.where(g == 2, step, 0.0)
        # grid_sample, align_corners=False; clamping keeps the int conversion in range and changes
        # nothing else (both taps are outside the plane there)
        ix = tl.minimum(tl.maximum(((gu + 1.0) * rf - 1.0) * 0.5, -2.0), rf + 1.0)
        iy = tl.minimum(tl.maximum(((gv + 1.0) * rf - 1.0) * 0.5, -2.0), rf + 1.0)
        x0f = tl.floor(ix)
        y0f = tl.floor(iy)
        plane_off = (P * 3 + g) * R * R
        return x0f.to(tl.int32), y0f.to(tl.int32), ix - x0f, iy - y0f, plane_off, g < 3

    @triton.jit
    def _tap(base_ptr, plane_off, x, y, R, ok):
        """Pointers ``[BLOCK, 4, 4]`` to texel (x, y) of each group (4 channels) and the tap's mask
        ``[BLOCK, 4, 1]`` (zero padding outside the plane)."""
        valid = ok & (x >= 0) & (x < R) & (y >= 0) & (y < R)
        texel = (plane_off + y * R + x) * 4
        ptrs = base_ptr + texel[:, :, None] + tl.arange(0, 4)[None, None, :]
        return ptrs, valid[:, :, None]

    @triton.jit
    def _load_tap(base_ptr, plane_off, x, y, R, ok):
        ptrs, valid = _tap(base_ptr, plane_off, x, y, R, ok)
        return tl.load(ptrs, mask=tl.broadcast_to(valid, ptrs.shape), other=0.0).to(tl.float32)

    @triton.jit
    def _sample_plane(base_ptr, u, v, R, P: tl.constexpr, BLOCK_M: tl.constexpr):
        """Plane P's features ``[BLOCK, 16]`` fp32, column ``group*4 + c`` (group 3 and c = 3 are zero)."""
        x0, y0, fx, fy, plane_off, ok = _bilinear(u, v, R, P)
        gx = 1.0 - fx
        gy = 1.0 - fy
        f = _load_tap(base_ptr, plane_off, x0, y0, R, ok) * (gx * gy)[:, :, None]
        f += _load_tap(base_ptr, plane_off, x0 + 1, y0, R, ok) * (fx * gy)[:, :, None]
        f += _load_tap(base_ptr, plane_off, x0, y0 + 1, R, ok) * (gx * fy)[:, :, None]
        f += _load_tap(base_ptr, plane_off, x0 + 1, y0 + 1, R, ok) * (fx * fy)[:, :, None]
        return tl.reshape(f, (BLOCK_M, 16))

    @triton.jit
    def _scatter_tap(grad_ptr, plane_off, x, y, R, ok, g3, w):
        ptrs, valid = _tap(grad_ptr, plane_off, x, y, R, ok)
        # all 4 channels (the padding one gets zero): one vector atomic per texel on sm_90
        tl.atomic_add(ptrs, g3 * w[:, :, None], mask=tl.broadcast_to(valid, ptrs.shape), sem="relaxed")

    @triton.jit
    def _scatter_plane(grad_ptr, gfeat, u, v, R, row_ok, P: tl.constexpr, BLOCK_M: tl.constexpr):
        """Add d(features) ``[BLOCK, 16]`` of plane P to the fp32 plane gradient at the bilinear taps."""
        x0, y0, fx, fy, plane_off, ok = _bilinear(u, v, R, P)
        ok = ok & row_ok[:, None]
        g3 = tl.reshape(gfeat, (BLOCK_M, 4, 4))
        gx = 1.0 - fx
        gy = 1.0 - fy
        _scatter_tap(grad_ptr, plane_off, x0, y0, R, ok, g3, gx * gy)
        _scatter_tap(grad_ptr, plane_off, x0 + 1, y0, R, ok, g3, fx * gy)
        _scatter_tap(grad_ptr, plane_off, x0, y0 + 1, R, ok, g3, gx * fy)
        _scatter_tap(grad_ptr, plane_off, x0 + 1, y0 + 1, R, ok, g3, fx * fy)

    @triton.jit
    def _view_encoding(dirs_ptr, rows, row_ok, VP: tl.constexpr, VIEW_FREQS: tl.constexpr):
        """``view_encoding`` of the block's directions: ``[BLOCK, VP]`` fp32, columns
        ``[d, sin d, cos d, sin 2d, cos 2d, ...]`` (d normalized), zero past ``3 + 6 VIEW_FREQS``."""
        dx = tl.load(dirs_ptr + rows * 3, mask=row_ok, other=1.0)
        dy = tl.load(dirs_ptr + rows * 3 + 1, mask=row_ok, other=0.0)
        dz = tl.load(dirs_ptr + rows * 3 + 2, mask=row_ok, other=0.0)
        inv = 1.0 / tl.maximum(tl.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
        dx = (dx * inv)[:, None]
        dy = (dy * inv)[:, None]
        dz = (dz * inv)[:, None]
        j = tl.arange(0, VP)[None, :]
        r = tl.maximum(j - 3, 0)
        comp = tl.where(j < 3, j, (r % 6) % 3)
        d = tl.where(comp == 0, dx, tl.where(comp == 1, dy, dz))
        scale = (1 << (r // 6)).to(tl.float32)
        phase = tl.where(r % 6 >= 3, 1.5707963267948966, 0.0)  # cos t = sin(t + pi/2)
        enc = tl.where(j < 3, d, _sin(d * scale + phase))
        return tl.where(j < 3 + 6 * VIEW_FREQS, enc, 0.0)

    @triton.jit
    def _forward_block(planes_ptr, dirs_ptr, w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout,
                       x, y, z, rows, row_ok, R,
                       H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                       C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                       SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr):
        """Features and both networks for one block of points.

        Returns the density output ``[BLOCK, OD]`` (column 0 = sigma_raw), rgb_raw ``[BLOCK, 16]``
        (columns 0..2; zeros without ``WITH_RGB``), the activation derivatives of each hidden layer (fp16),
        density then colour, as tuples, and, for weight gradients, each matrix's input (bf16, as the
        ``tl.dot`` consumed it): the features of each plane ``[BLOCK, 16]``, the density hidden outputs
        ``[BLOCK, H]``, the view encoding ``[BLOCK, VP]`` and the colour hidden outputs ``[BLOCK, CH]``.
        The compiler drops what a kernel does not use.
        """
        pre = tl.zeros((BLOCK_M, H), dtype=tl.float32)
        feats = ()
        for p in tl.static_range(3):
            u, v = _plane_uv(x, y, z, p)
            feat = _sample_plane(planes_ptr, u, v, R, p, BLOCK_M)
            feats = feats + (feat.to(tl.bfloat16),)
            pre += _dense(feat, w_in + p * 16 * H, 16, H)
        h, dh = _act_and_grad(pre, SOFTPLUS)
        d_grads = (dh.to(tl.float16),)
        d_acts = (h.to(tl.bfloat16),)
        for i in tl.static_range(D_LAYERS - 1):
            h, dh = _act_and_grad(_dense(h, w_hid + i * H * H, H, H), SOFTPLUS)
            d_grads = d_grads + (dh.to(tl.float16),)
            d_acts = d_acts + (h.to(tl.bfloat16),)
        dens = _dense(h, w_dout, H, OD)

        c_grads = ()
        c_acts = ()
        enc = tl.zeros((BLOCK_M, VP), dtype=tl.bfloat16)
        rgb = tl.zeros((BLOCK_M, 16), dtype=tl.float32)
        if WITH_RGB:
            enc32 = _view_encoding(dirs_ptr, rows, row_ok, VP, VIEW_FREQS)
            enc = enc32.to(tl.bfloat16)
            pre = _dense(dens, w_cgeo, OD, CH) + _dense(enc32, w_cview, VP, CH)
            h, dh = _act_and_grad(pre, SOFTPLUS)
            c_grads = (dh.to(tl.float16),)
            c_acts = (h.to(tl.bfloat16),)
            for i in tl.static_range(C_LAYERS - 1):
                h, dh = _act_and_grad(_dense(h, w_chid + i * CH * CH, CH, CH), SOFTPLUS)
                c_grads = c_grads + (dh.to(tl.float16),)
                c_acts = c_acts + (h.to(tl.bfloat16),)
            rgb = _dense(h, w_cout, CH, 16)
        return dens, rgb, d_grads, c_grads, feats, d_acts, enc, c_acts

    @triton.jit
    def _load_points(pts_ptr, rows, row_ok, VOLATILE: tl.constexpr = False):
        """x, y, z ``[BLOCK]`` of points ``[N, 3]`` (fp32) at ``rows``."""
        x = tl.load(pts_ptr + rows * 3, mask=row_ok, other=0.0, volatile=VOLATILE)
        y = tl.load(pts_ptr + rows * 3 + 1, mask=row_ok, other=0.0, volatile=VOLATILE)
        z = tl.load(pts_ptr + rows * 3 + 2, mask=row_ok, other=0.0, volatile=VOLATILE)
        return x, y, z

    @triton.jit
    def _fused_forward_kernel(planes_ptr, pts_ptr, dirs_ptr, rgb_ptr, sigma_ptr,
                              w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout, M, R,
                              H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                              C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                              SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr):
        """Grid ``(cdiv(M, BLOCK_M), B)``: rgb_raw ``[B, M, 3]`` and sigma_raw ``[B, M, 1]`` (fp32)."""
        b = tl.program_id(1).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        planes_b = planes_ptr + b * (9 * 4) * R * R
        grow = b * M + rows  # global point index, int64
        x, y, z = _load_points(pts_ptr, grow, row_ok)
        dens, rgb, _, _, _, _, _, _ = _forward_block(
            planes_b, dirs_ptr, w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout, x, y, z, grow, row_ok, R,
            H, D_LAYERS, OD, CH, C_LAYERS, VP, VIEW_FREQS, SOFTPLUS, WITH_RGB, BLOCK_M)
        col = tl.arange(0, OD)[None, :]
        tl.store(sigma_ptr + grow[:, None] + col, dens, mask=row_ok[:, None] & (col == 0))
        if WITH_RGB:
            col = tl.arange(0, 16)[None, :]
            tl.store(rgb_ptr + grow[:, None] * 3 + col, rgb, mask=row_ok[:, None] & (col < 3))

    @triton.jit
    def _acc_tn(acc, a, g):
        """``acc + a^T @ g`` for ``a [BLOCK, K]`` and ``g [BLOCK, N]`` rounded to bf16, fp32 accumulation."""
        if _INTERPRETED:
            return tl.dot(tl.trans(a.to(tl.bfloat16).to(tl.float32)), g.to(tl.bfloat16).to(tl.float32), acc=acc)
        else:
            return tl.dot(tl.trans(a.to(tl.bfloat16)), g.to(tl.bfloat16), acc=acc, out_dtype=tl.float32)

    @triton.jit
    def _wgrad(acc, grad_ptr, a, g, K: tl.constexpr, N: tl.constexpr, WGRAD: tl.constexpr):
        """One block's gradient ``a^T g [K, N]`` of a weight matrix ``W [K, N]`` whose input was ``a [BLOCK, K]``
        and output gradient ``g [BLOCK, N]``: added to ``acc`` (WGRAD 1), atomically to the fp32 gradient at
        ``grad_ptr`` (WGRAD 2, ``acc`` returned unchanged) or dropped (WGRAD 0)."""
        if WGRAD == 1:
            return _acc_tn(acc, a, g)
        elif WGRAD == 2:
            grad = _acc_tn(tl.zeros((K, N), dtype=tl.float32), a, g)
            tl.atomic_add(grad_ptr + _matrix_offsets(K, N), grad, sem="relaxed")
            return acc
        else:
            return acc

    @triton.jit
    def _replace(items, i: tl.constexpr, value, N: tl.constexpr):
        """The tuple ``items`` of length N with item i replaced by ``value``."""
        out = ()
        for j in tl.static_range(N):
            out = out + ((value,) if j == i else (items[j],))
        return out

    @triton.jit
    def _backprop_hidden(g, grads, acts, accs, w_ptr, grad_ptr, W: tl.constexpr, LAYERS: tl.constexpr,
                         WGRAD: tl.constexpr):
        """Back from the last hidden output (``g [BLOCK, W]``) of a network with LAYERS hidden layers (their
        activation derivatives ``grads`` and outputs ``acts``) to the first layer's pre-activation; returns
        that gradient and ``accs``, the W x W matrices' accumulators (see ``_wgrad``)."""
        for i in tl.static_range(LAYERS - 1, 0, -1):
            g = g * grads[i].to(tl.float32)
            offset = (i - 1) * W * W
            acc = _wgrad(accs[i - 1], grad_ptr + offset, acts[i - 1], g, W, W, WGRAD)
            accs = _replace(accs, i - 1, acc, LAYERS - 1)
            g = _dense_t(g, w_ptr + offset, W, W)
        return g * grads[0].to(tl.float32), accs

    @triton.jit
    def _zero_accs(H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                   C_LAYERS: tl.constexpr, VP: tl.constexpr):
        """fp32 zeros shaped as the packed matrices: (d_in per plane, d_hidden per layer, d_out, c_geo, c_view,
        c_hidden per layer, c_out)."""
        a_in = ()
        for _ in tl.static_range(3):
            a_in = a_in + (tl.zeros((16, H), dtype=tl.float32),)
        a_hid = ()
        for _ in tl.static_range(D_LAYERS - 1):
            a_hid = a_hid + (tl.zeros((H, H), dtype=tl.float32),)
        a_chid = ()
        for _ in tl.static_range(C_LAYERS - 1):
            a_chid = a_chid + (tl.zeros((CH, CH), dtype=tl.float32),)
        return (a_in, a_hid, tl.zeros((H, OD), dtype=tl.float32), tl.zeros((OD, CH), dtype=tl.float32),
                tl.zeros((VP, CH), dtype=tl.float32), a_chid, tl.zeros((CH, 16), dtype=tl.float32))

    @triton.jit
    def _backward_block(planes_b, grad_b, pts_ptr, dirs_ptr, grad_rgb_ptr, grad_sigma_ptr, ws, gs, accs,
                        grow, row_ok, R, H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr,
                        CH: tl.constexpr, C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                        SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr,
                        WGRAD: tl.constexpr):
        """Backward of one block of points (global indices ``grow``): adds d(loss)/d(planes) into ``grad_b``
        and returns the weight-gradient accumulators ``accs`` (``_zero_accs``'s layout) after ``_wgrad``.

        ``ws``: the 7 packed weight matrices, ``gs``: their fp32 gradients (read with WGRAD 2 only).
        """
        w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout = ws
        g_in, g_hid, g_dout, g_cgeo, g_cview, g_chid, g_cout = gs
        a_in, a_hid, a_dout, a_cgeo, a_cview, a_chid, a_cout = accs
        x, y, z = _load_points(pts_ptr, grow, row_ok)
        dens, _, d_grads, c_grads, feats, d_acts, enc, c_acts = _forward_block(
            planes_b, dirs_ptr, w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout, x, y, z, grow, row_ok, R,
            H, D_LAYERS, OD, CH, C_LAYERS, VP, VIEW_FREQS, SOFTPLUS, WITH_RGB, BLOCK_M)
        col = tl.arange(0, OD)[None, :]
        g_sigma = tl.load(grad_sigma_ptr + grow, mask=row_ok, other=0.0)
        g_dens = tl.where(col == 0, g_sigma[:, None], 0.0)  # [BLOCK, OD]
        if WITH_RGB:
            col3 = tl.arange(0, 16)[None, :]
            g_rgb = tl.load(grad_rgb_ptr + grow[:, None] * 3 + col3, mask=row_ok[:, None] & (col3 < 3), other=0.0)
            a_cout = _wgrad(a_cout, g_cout, c_acts[C_LAYERS - 1], g_rgb, CH, 16, WGRAD)
            g = _dense_t(g_rgb, w_cout, CH, 16)  # [BLOCK, CH]
            g, a_chid = _backprop_hidden(g, c_grads, c_acts, a_chid, w_chid, g_chid, CH, C_LAYERS, WGRAD)
            a_cgeo = _wgrad(a_cgeo, g_cgeo, dens, g, OD, CH, WGRAD)
            a_cview = _wgrad(a_cview, g_cview, enc, g, VP, CH, WGRAD)
            g_dens += _dense_t(g, w_cgeo, OD, CH)
        a_dout = _wgrad(a_dout, g_dout, d_acts[D_LAYERS - 1], g_dens, H, OD, WGRAD)
        g = _dense_t(g_dens, w_dout, H, OD)  # [BLOCK, H]
        g, a_hid = _backprop_hidden(g, d_grads, d_acts, a_hid, w_hid, g_hid, H, D_LAYERS, WGRAD)
        # reload the points (volatile: not merged with the first load) so that the compiler recomputes the
        # taps here instead of keeping the forward's tap coordinates live across the MLP (register pressure)
        x, y, z = _load_points(pts_ptr, grow, row_ok, True)
        new_in = ()
        for p in tl.static_range(3):
            u, v = _plane_uv(x, y, z, p)
            new_in = new_in + (_wgrad(a_in[p], g_in + p * 16 * H, feats[p], g, 16, H, WGRAD),)
            gfeat = _dense_t(g, w_in + p * 16 * H, 16, H)  # [BLOCK, 16]
            _scatter_plane(grad_b, gfeat, u, v, R, row_ok, p, BLOCK_M)
        return new_in, a_hid, a_dout, a_cgeo, a_cview, a_chid, a_cout

    @triton.jit
    def _fused_backward_kernel(planes_ptr, pts_ptr, dirs_ptr, grad_rgb_ptr, grad_sigma_ptr, grad_planes_ptr,
                               w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout, M, R,
                               H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                               C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                               SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr):
        """Grid ``(cdiv(M, BLOCK_M), B)``: adds d(loss)/d(planes) into fp32 ``[B, 9, R, R, 4]``.

        ``WITH_RGB``: rgb_raw has an incoming gradient ``[B, M, 3]`` (the colour network is recomputed
        and backpropagated); the sigma gradient ``[B, M, 1]`` is always read.
        """
        b = tl.program_id(1).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        plane_stride = b * (9 * 4) * R * R
        ws = (w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout)
        # no weight gradients (WGRAD 0): their pointers (here ws) and accumulators are never used
        _backward_block(planes_ptr + plane_stride, grad_planes_ptr + plane_stride, pts_ptr, dirs_ptr, grad_rgb_ptr,
                        grad_sigma_ptr, ws, ws, _zero_accs(H, D_LAYERS, OD, CH, C_LAYERS, VP), b * M + rows,
                        rows < M, R, H, D_LAYERS, OD, CH, C_LAYERS, VP, VIEW_FREQS, SOFTPLUS, WITH_RGB, BLOCK_M, 0)

    @triton.jit
    def _store_partials(accs, gs, H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr,
                        CH: tl.constexpr, C_LAYERS: tl.constexpr, VP: tl.constexpr, WITH_RGB: tl.constexpr):
        """Store the accumulators (``_zero_accs``'s layout) to the packed matrices' fp32 gradients ``gs``."""
        a_in, a_hid, a_dout, a_cgeo, a_cview, a_chid, a_cout = accs
        g_in, g_hid, g_dout, g_cgeo, g_cview, g_chid, g_cout = gs
        for p in tl.static_range(3):
            tl.store(g_in + p * 16 * H + _matrix_offsets(16, H), a_in[p])
        for i in tl.static_range(D_LAYERS - 1):
            tl.store(g_hid + i * H * H + _matrix_offsets(H, H), a_hid[i])
        tl.store(g_dout + _matrix_offsets(H, OD), a_dout)
        if WITH_RGB:
            tl.store(g_cgeo + _matrix_offsets(OD, CH), a_cgeo)
            tl.store(g_cview + _matrix_offsets(VP, CH), a_cview)
            for i in tl.static_range(C_LAYERS - 1):
                tl.store(g_chid + i * CH * CH + _matrix_offsets(CH, CH), a_chid[i])
            tl.store(g_cout + _matrix_offsets(CH, 16), a_cout)

    @triton.jit
    def _fused_backward_wgrad_kernel(planes_ptr, pts_ptr, dirs_ptr, grad_rgb_ptr, grad_sigma_ptr, grad_planes_ptr,
                                     w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout,
                                     g_in, g_hid, g_dout, g_cgeo, g_cview, g_chid, g_cout,
                                     M, R, n_slots, slot_stride,
                                     H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                                     C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                                     SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr,
                                     WGRAD: tl.constexpr, BLOCKS_PER_PROGRAM: tl.constexpr):
        """Grid ``(P, B)``: ``_fused_backward_kernel``'s plane gradient plus the weight gradients.

        Program (i, b) takes blocks i, i + P, ... (``BLOCKS_PER_PROGRAM`` of them) of set b's points and
        writes weight gradients to slot ``(b * P + i) % n_slots`` of the fp32 buffers ``g_*`` (slots
        ``slot_stride`` elements apart, summed afterwards). WGRAD 1 (partial sums, ``n_slots = B * P``): the
        program sums its blocks in registers and stores the sum once. WGRAD 2 (atomics, one block per
        program): each block's gradients are added atomically.
        """
        b = tl.program_id(1).to(tl.int64)
        pid = tl.program_id(0)
        n_prog = tl.num_programs(0)
        plane_stride = b * (9 * 4) * R * R
        ws = (w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout)
        slot = ((b * n_prog + pid) % n_slots) * slot_stride
        gs = (g_in + slot, g_hid + slot, g_dout + slot, g_cgeo + slot, g_cview + slot, g_chid + slot, g_cout + slot)
        accs = _zero_accs(H, D_LAYERS, OD, CH, C_LAYERS, VP)
        for it in range(BLOCKS_PER_PROGRAM):
            rows = (pid + it * n_prog) * BLOCK_M + tl.arange(0, BLOCK_M)
            accs = _backward_block(planes_ptr + plane_stride, grad_planes_ptr + plane_stride, pts_ptr, dirs_ptr,
                                   grad_rgb_ptr, grad_sigma_ptr, ws, gs, accs, b * M + rows, rows < M, R, H,
                                   D_LAYERS, OD, CH, C_LAYERS, VP, VIEW_FREQS, SOFTPLUS, WITH_RGB, BLOCK_M, WGRAD)
        if WGRAD == 1:
            _store_partials(accs, gs, H, D_LAYERS, OD, CH, C_LAYERS, VP, WITH_RGB)

    _INTERPRETED = tl.constexpr(type(_fused_forward_kernel).__name__ == "InterpretedFunction")
    """True when the kernels were decorated under TRITON_INTERPRET=1 (read by the jitted helpers above)."""
