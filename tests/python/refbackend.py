"""refbackend.py -- a CPU stand-in for sfa's GPU calls, for the tests: the
binding's calls (sfa._calls.forward_into, backward_into, hash_prepare_into,
hash_unsort_into, topk_mask_into, merge_into, decode_into, kv_append_into) are
replaced by the library's float64 CPU reference (sfa_reference_forward /
sfa_reference_backward_dlse / sfa_reference_merge) and by torch ops, so that
everything above them -- the custom ops, their fake and autograd
registrations, torch.compile, the SDPA and top-left mappings, the mask and
bias handling -- runs on a machine without a GPU, against the library's own
semantics. Packed sequences (cu_seqlens in the extras, and the helpers'
cu_seqlens arguments) run each sequence through the reference alone, with its
rows and key columns of a window bias / mask [Hb, total_q|1, Kmax] (keys past
Kmax masked), and dbias put back alike. A decode step runs each sequence's
used cache positions through the forward reference (docs/semantics.md: the
same bottom-right alignment; mode hash as qk_drop-style positions, q_idx the
new tokens' and k_idx the keys', with the buckets); kv_indices are served in
mode hash only (there a listed position is a k_idx).

    with refbackend.cpu(sfa):
        o = sfa.attention(q_cpu, k_cpu, v_cpu, causal=True)
"""
import contextlib
import ctypes

import torch


def _f32(t):
    return t.detach().to(torch.float32).contiguous()


def _fptr(t):
    return ctypes.cast(t.data_ptr(), ctypes.POINTER(ctypes.c_float)) if t is not None else None


def _host_extras(capi, ex, B):
    """(HostExtras, tensors kept alive). bias/mask [b, h, r, Tk] as contiguous
    arrays with their broadcast sizes."""
    he = capi.HostExtras()
    keep = []

    def arr(t, ctype, dtype):
        c = t.detach().to(dtype).contiguous()
        keep.append(c)
        return ctypes.cast(c.data_ptr(), ctypes.POINTER(ctype))

    for n in ("q_idx", "k_idx", "q_hash", "k_hash"):
        if ex.get(n) is not None:
            setattr(he, n, arr(ex[n], ctypes.c_int32, torch.int32))
    if ex.get("bias") is not None:
        b = ex["bias"]
        he.bias = arr(b, ctypes.c_float, torch.float32)
        he.bias_batches, he.bias_heads, he.bias_rows = b.shape[0], b.shape[1], b.shape[2]
    if ex.get("mask") is not None:
        m = ex["mask"]
        he.mask = arr(m.to(torch.bool), ctypes.c_uint8, torch.uint8)
        he.mask_batches, he.mask_heads, he.mask_rows = m.shape[0], m.shape[1], m.shape[2]
    if ex.get("alibi_slopes") is not None:
        a = ex["alibi_slopes"]
        he.alibi_slopes = arr(a, ctypes.c_float, torch.float32)
        he.alibi_batches = a.shape[0] if a.dim() == 2 else 1
    return he, keep


def _check(st, err):
    if st != 0:
        raise ValueError("sfa (CPU reference): " + err.value.decode())


def _packed(extras):
    """The prefix sums of a packed call (host lists), or None."""
    if extras.get("cu_seqlens_q") is None:
        return None
    return extras["cu_seqlens_q"].tolist(), extras["cu_seqlens_k"].tolist()


def _seq(t, a, b):
    """Rows a:b of a packed [total, H, D] tensor as [1, H, n, D]."""
    return t[a:b].transpose(0, 1).unsqueeze(0)


def _seq_extras(extras, qa, qb, ka, kb):
    """A packed call's index arrays [H, total] cut to one sequence, [1, H, n]."""
    out = {}
    for n, (a, b) in (("q_idx", (qa, qb)), ("q_hash", (qa, qb)), ("k_idx", (ka, kb)), ("k_hash", (ka, kb))):
        if extras.get(n) is not None:
            out[n] = extras[n][:, a:b].unsqueeze(0)
    return out


def _seq_window(extras, qa, qb, tk):
    """A packed call's window bias / mask [Hb, total_q|1, Kmax] cut to one
    sequence as [1, Hb, n|1, tk] (column j: its key j). Keys at or past Kmax
    are masked: the mask is False there (a mask of ones below Kmax where the
    call has none), the bias 0."""
    b, m = extras.get("bias"), extras.get("mask")
    if b is None and m is None:
        return {}
    kmax = min(t.shape[-1] for t in (b, m) if t is not None)
    w = min(tk, kmax)

    def rows(t):
        return t if t.shape[1] == 1 else t[:, qa:qb]

    out = {}
    if b is not None:
        sb = torch.zeros(b.shape[0], rows(b).shape[1], tk, dtype=b.dtype)
        sb[..., :w] = rows(b)[..., :w]
        out["bias"] = sb.unsqueeze(0)
    if m is not None or tk > kmax:
        mm = m if m is not None else torch.ones(1, 1, kmax, dtype=torch.bool)
        sm = torch.zeros(mm.shape[0], rows(mm).shape[1], tk, dtype=torch.bool)
        sm[..., :w] = rows(mm)[..., :w].to(torch.bool)
        out["mask"] = sm.unsqueeze(0)
    return out


def _cache_rows(t, page_table, b, n):
    """Positions 0 .. n - 1 of sequence b of a cache array, [Hkv, n, ...]: t is
    [B, Hkv, capacity, ...], or paged [num_pages, page_size, Hkv, ...] with
    page_table (every page index in range)."""
    if page_table is None:
        return t[b, :, :n]
    pos = torch.arange(n)
    return t[page_table[b, pos // t.shape[1]].long(), pos % t.shape[1]].transpose(0, 1)


def _capacity(k_cache, page_table):
    return page_table.shape[1] * k_cache.shape[1] if page_table is not None else k_cache.shape[2]


def _used(seqused, B, cap):
    return [max(0, min(int(u), cap)) for u in seqused.tolist()] if seqused is not None else [cap] * B


def make(sfa):
    capi, calls = sfa._capi, sfa._calls

    def forward_packed(q, k, v, o, lse, mode, causal, scale, window_left, window_right, extras, cu):
        """Each sequence through the reference alone; o = 0, lse = -inf where it sees no key."""
        o.zero_()
        if lse is not None:
            lse.fill_(float("-inf"))
        for (qa, qb), (ka, kb) in zip(zip(cu[0], cu[0][1:]), zip(cu[1], cu[1][1:])):
            if qb == qa or kb == ka:
                continue
            os_ = torch.empty(1, q.shape[1], qb - qa, q.shape[2], dtype=o.dtype)
            ls = torch.empty(1, q.shape[1], qb - qa, dtype=torch.float32)
            forward_into(_seq(q, qa, qb), _seq(k, ka, kb), _seq(v, ka, kb), os_, ls, mode, causal, scale,
                         window_left, window_right,
                         {**_seq_extras(extras, qa, qb, ka, kb), **_seq_window(extras, qa, qb, kb - ka)})
            o[qa:qb].copy_(os_[0].transpose(0, 1))
            if lse is not None:
                lse[:, qa:qb].copy_(ls[0])

    def backward_packed(dout, q, k, v, o, lse, dq, dk, dv, dbias, mode, causal, scale, window_left,
                        window_right, deterministic, extras, cu):
        """Each sequence alone; dbias [Hb, total_q|1, Kmax]: each sequence's rows
        and key columns (a broadcast row: summed over the sequences), 0 elsewhere."""
        dq.zero_()
        dk.zero_()
        dv.zero_()
        db = torch.zeros(dbias.shape) if dbias is not None else None
        for (qa, qb), (ka, kb) in zip(zip(cu[0], cu[0][1:]), zip(cu[1], cu[1][1:])):
            if qb == qa or kb == ka:
                continue
            g = [torch.empty(1, t.shape[1], b - a, t.shape[2], dtype=t.dtype)
                 for t, a, b in ((q, qa, qb), (k, ka, kb), (v, ka, kb))]
            win = _seq_window(extras, qa, qb, kb - ka)
            sdb = torch.empty(win["bias"].shape) if db is not None else None
            backward_into(_seq(dout, qa, qb), _seq(q, qa, qb), _seq(k, ka, kb), _seq(v, ka, kb), None,
                          lse[:, qa:qb].unsqueeze(0), g[0], g[1], g[2], sdb, mode, causal, scale, window_left,
                          window_right, deterministic, {**_seq_extras(extras, qa, qb, ka, kb), **win})
            dq[qa:qb].copy_(g[0][0].transpose(0, 1))
            dk[ka:kb].copy_(g[1][0].transpose(0, 1))
            dv[ka:kb].copy_(g[2][0].transpose(0, 1))
            if db is not None:
                w = min(kb - ka, db.shape[-1])
                if db.shape[1] == 1:
                    db[..., :w] += sdb[0][..., :w]
                else:
                    db[:, qa:qb, :w] = sdb[0][..., :w]
        if dbias is not None:
            dbias.copy_(db)

    def forward_into(q, k, v, o, lse, mode, causal, scale, window_left, window_right, extras, strict_causal=False,
                     softcap=0.0):
        cu = _packed(extras)
        if cu is not None:
            return forward_packed(q, k, v, o, lse, mode, causal, scale, window_left, window_right, extras, cu)
        p = calls._params(mode, causal, scale, window_left, window_right, False, strict_causal, softcap)
        for t in (q, k, v):  # the layout helpers run as on the GPU path
            calls.rows_aligned(t)
        calls.bias_ready(extras.get("bias"))
        calls.mask_ready(extras.get("mask"))
        calls.slopes_ready(extras.get("alibi_slopes"))
        B, Hq, Tq, D = q.shape
        Hkv, Tk = k.shape[1], k.shape[2]
        qf, kf, vf = _f32(q), _f32(k), _f32(v)
        of = torch.empty(B, Hq, Tq, D, dtype=torch.float32)
        lf = torch.empty(B, Hq, Tq, dtype=torch.float32)
        he, keep = _host_extras(capi, extras, B)
        err = ctypes.create_string_buffer(1024)
        st = capi.lib.sfa_reference_forward(ctypes.byref(p), B, Hq, Hkv, Tq, Tk, D, _fptr(qf), _fptr(kf), _fptr(vf),
                                            ctypes.byref(he), _fptr(of), _fptr(lf), err, len(err))
        _check(st, err)
        o.copy_(of)
        if lse is not None:
            lse.copy_(lf)

    def backward_into(dout, q, k, v, o, lse, dq, dk, dv, dbias, mode, causal, scale, window_left, window_right,
                      deterministic, extras, strict_causal=False, softcap=0.0, dlse=None):
        cu = _packed(extras)
        if cu is not None:
            return backward_packed(dout, q, k, v, o, lse, dq, dk, dv, dbias, mode, causal, scale, window_left,
                                   window_right, deterministic, extras, cu)
        p = calls._params(mode, causal, scale, window_left, window_right, deterministic, strict_causal, softcap)
        B, Hq, Tq, D = q.shape
        Hkv, Tk = k.shape[1], k.shape[2]
        qf, kf, vf, df = _f32(q), _f32(k), _f32(v), _f32(dout)
        dlf = _f32(dlse.expand(B, Hq, Tq)) if dlse is not None else None
        if o is not None and lse is not None:
            # The kernels' backward takes P = exp(S - lse) and delta = rowsum(dout * o)
            # from the o and lse it is given, which may be another call's (the
            # merged o and lse of a ring's key split). The reference recomputes its
            # own (o_c, lse_c) instead, so hand it the same gradient in its own terms:
            # w = exp(lse_c - lse), dout_c = w dout, dlse_c = w (rowsum(dout (o_c - o)) + dlse).
            oc = torch.empty(q.shape, dtype=o.dtype)
            lc = torch.empty(q.shape[:-1], dtype=torch.float32)
            forward_into(q, k, v, oc, lc, mode, causal, scale, window_left, window_right, extras,
                         strict_causal, softcap)
            lg = lse.detach().to(torch.float32).expand(B, Hq, Tq)
            w = torch.where(torch.isinf(lc) & (lc < 0), torch.zeros_like(lc), torch.exp(lc - lg))
            extra = (df * (_f32(oc) - _f32(o))).sum(-1) + (dlf if dlf is not None else 0.0)
            df = (w.unsqueeze(-1) * df).contiguous()
            dlf = (w * extra).contiguous()
        dqf, dkf, dvf = torch.empty(q.shape), torch.empty(k.shape), torch.empty(v.shape)
        dbf = torch.empty(dbias.shape) if dbias is not None else None
        he, keep = _host_extras(capi, extras, B)
        err = ctypes.create_string_buffer(1024)
        st = capi.lib.sfa_reference_backward_dlse(ctypes.byref(p), B, Hq, Hkv, Tq, Tk, D, _fptr(qf), _fptr(kf),
                                                  _fptr(vf), ctypes.byref(he), _fptr(df), _fptr(dlf), _fptr(dqf),
                                                  _fptr(dkf), _fptr(dvf), _fptr(dbf), err, len(err))
        _check(st, err)
        dq.copy_(dqf)
        dk.copy_(dkf)
        dv.copy_(dvf)
        if dbias is not None:
            dbias.copy_(dbf)

    def hash_prepare_into(bucket, num_buckets, x, xs, x2, x2s, idx, hsh, cu_seqlens=None):
        num_buckets = sfa._args.check_int("num_buckets", num_buckets, 1)
        if cu_seqlens is not None:  # each sequence alone, through views of the packed tensors
            cu = cu_seqlens.tolist()
            for a, b in zip(cu, cu[1:]):
                if b > a:
                    hash_prepare_into(bucket[:, a:b].unsqueeze(0), num_buckets,
                                      *(None if t is None else _seq(t, a, b) for t in (x, xs, x2, x2s)),
                                      idx[:, a:b].unsqueeze(0), hsh[:, a:b].unsqueeze(0))
            return
        T = bucket.shape[-1]
        pos = torch.arange(T).expand(bucket.shape)
        b = bucket.long()
        out_of_range = (b < 0) | (b >= num_buckets)
        key = torch.where(out_of_range, torch.full_like(b, num_buckets), b) * T + pos
        order = key.argsort(-1)
        idx.copy_(order)
        hsh.copy_(torch.where(out_of_range, torch.full_like(b, 2**31 - 1), b).gather(-1, order))
        for src, dst in ((x, xs), (x2, x2s)):
            if src is not None:
                dst.copy_(src.gather(2, order.unsqueeze(-1).expand(*order.shape, src.shape[-1])))

    def hash_unsort_into(o_sorted, idx, o, cu_seqlens=None):
        if cu_seqlens is not None:
            cu = cu_seqlens.tolist()
            for a, b in zip(cu, cu[1:]):
                if b > a:
                    hash_unsort_into(_seq(o_sorted, a, b), idx[:, a:b].unsqueeze(0), _seq(o, a, b))
            return
        sel = idx.long().unsqueeze(-1).expand(*idx.shape, o_sorted.shape[-1])
        o.scatter_(2, sel, o_sorted)

    def topk_mask_into(bias, w, causal, mask, cu_seqlens_q=None, cu_seqlens_k=None):
        """The w largest allowed non-NaN biases of each row, ties to the lower
        key; packed: each sequence's rows on its first len_k columns, the rest 0."""
        w = sfa._args.check_int("w", w, 0)
        if cu_seqlens_q is not None:
            cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
            mask.zero_()
            for (qa, qb), (ka, kb) in zip(zip(cq, cq[1:]), zip(ck, ck[1:])):
                if qb > qa and kb > ka:
                    topk_mask_into(bias[:, qa:qb, :kb - ka].unsqueeze(0), w, causal,
                                   mask[:, qa:qb, :kb - ka].unsqueeze(0))
            return
        Tq, Tk = bias.shape[-2:]
        v = bias.to(torch.float64)
        allowed = ~torch.isnan(v)
        if causal:
            i, j = torch.arange(Tq).unsqueeze(1), torch.arange(Tk).unsqueeze(0)
            allowed = allowed & (j <= i + Tk - Tq)
        # stable sorts: by value, largest first (-0 == +0, ties keep key order), then allowed first
        o1 = torch.argsort(torch.where(allowed, -v, torch.zeros_like(v)), dim=-1, stable=True)
        order = o1.gather(-1, torch.argsort((~allowed).gather(-1, o1).to(torch.int8), dim=-1, stable=True))
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(Tk).expand_as(order).contiguous())
        mask.copy_(((rank < w) & allowed).to(torch.uint8))

    def merge_into(o_parts, lse_parts, o, lse):
        N, D = o_parts.shape[0], o_parts.shape[-1]
        rows = lse_parts[0].numel()
        opf, lpf = _f32(o_parts), _f32(lse_parts)
        of, lf = torch.empty(o.shape, dtype=torch.float32), torch.empty(o.shape[:-1], dtype=torch.float32)
        err = ctypes.create_string_buffer(1024)
        st = capi.lib.sfa_reference_merge(N, rows, D, _fptr(opf), _fptr(lpf), _fptr(of), _fptr(lf), err, len(err))
        _check(st, err)
        o.copy_(of)
        if lse is not None:
            lse.copy_(lf)

    def decode_into(q, k_cache, v_cache, page_table, seqused, kv_indices, o, lse, mode, causal, scale,
                    window_left, window_right, k_hash=None, q_hash=None, strict_causal=False, workspace=None):
        B, Hq, Tn, D = q.shape
        used = _used(seqused, B, _capacity(k_cache, page_table))
        o.zero_()
        if lse is not None:
            lse.fill_(float("-inf"))
        if kv_indices is not None and mode != "hash":
            raise NotImplementedError("refbackend: decode with kv_indices in mode hash only")
        for b, n in enumerate(used):
            if n == 0:
                continue
            kb, vb = _cache_rows(k_cache, page_table, b, n), _cache_rows(v_cache, page_table, b, n)
            ex = {}
            if mode == "hash":
                kh = _cache_rows(k_hash, page_table, b, n)
                kpos = torch.arange(n).expand(kb.shape[0], n)
                if kv_indices is not None:  # the listed positions; the others are never seen
                    li = kv_indices[b].long()
                    ok = (li >= 0) & (li < n)
                    li = li.clamp(0, n - 1)
                    kb = torch.stack([kb[h, li[h]] for h in range(kb.shape[0])])
                    vb = torch.stack([vb[h, li[h]] for h in range(vb.shape[0])])
                    kh = torch.gather(kh, 1, li)
                    kpos = torch.where(ok, li, torch.full_like(li, 2**31 - 1))
                ex = dict(q_idx=(n - Tn + torch.arange(Tn)).expand(Hq, Tn)[None], k_idx=kpos[None],
                          q_hash=q_hash[b:b + 1], k_hash=kh[None])
            ob = torch.empty(1, Hq, Tn, D, dtype=o.dtype)
            lb = torch.empty(1, Hq, Tn, dtype=torch.float32)
            forward_into(q[b:b + 1], kb[None], vb[None], ob, lb, mode, causal, scale, window_left, window_right, ex,
                         strict_causal)
            o[b].copy_(ob[0])
            if lse is not None:
                lse[b].copy_(lb[0])

    def kv_append_into(k_cache, v_cache, page_table, seqused, k_new, v_new, k_hash=None, k_hash_new=None):
        B, Hkv, Tn, D = k_new.shape
        used = _used(seqused, B, _capacity(k_cache, page_table))
        for b in range(B):
            for t in range(Tn):
                p = used[b] - Tn + t
                if p < 0:
                    continue
                if page_table is None:
                    at = (b, slice(None), p)
                else:
                    page = int(page_table[b, p // k_cache.shape[1]])
                    if not 0 <= page < k_cache.shape[0]:
                        continue
                    at = (page, p % k_cache.shape[1])
                k_cache[at] = k_new[b, :, t]
                v_cache[at] = v_new[b, :, t]
                if k_hash_new is not None:
                    k_hash[at] = k_hash_new[b, :, t]

    return dict(DEVICE_TYPE="cpu", forward_into=forward_into, backward_into=backward_into,
                hash_prepare_into=hash_prepare_into, hash_unsort_into=hash_unsort_into, topk_mask_into=topk_mask_into,
                merge_into=merge_into, decode_into=decode_into, kv_append_into=kv_append_into)


@contextlib.contextmanager
def cpu(sfa):
    """sfa's calls run on CPU tensors through the reference while inside."""
    saved = {n: getattr(sfa._calls, n) for n in ("DEVICE_TYPE", "forward_into", "backward_into",
                                                  "hash_prepare_into", "hash_unsort_into", "topk_mask_into",
                                                  "merge_into", "decode_into", "kv_append_into")}
    for n, f in make(sfa).items():
        setattr(sfa._calls, n, f)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(sfa._calls, n, f)
