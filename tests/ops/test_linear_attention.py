"""ONNX opset 27's standard ``LinearAttention`` op (issue 13): does it express RWKV-6 and RWKV-7 exactly?

Conclusions (``benchmarks/results/linear_attention.md``): RWKV-6 (and the bidirectional WKV-6 of VRWKV6) is
its ``gated`` rule with per-key-dimension decay, fed the keys, values and decays one token late, plus the bonus
``(r . u . k) v`` (O(T C)) added outside; RWKV-7 is not any of its rules, because ``gated_delta``'s state
transition ``(I - beta k k^T) diag(e^g)`` ties its rank-one erase to the decay and to the written key, which
RWKV-7's ``diag(e^w) + b a^T`` with independent ``a``, ``b`` and ``k`` does not satisfy.

:func:`linear_attention_ref` is the op's documented update rule, checked against ONNX Runtime's kernel and the
``onnx`` reference implementation where they are installed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vrwkv_edge.ops.biwkv import bi_wkv6_ref
from vrwkv_edge.ops.wkv6 import wkv6_ref
from vrwkv_edge.ops.wkv7 import wkv7_step

UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def linear_attention_ref(q, k, v, state, decay=None, beta=None, rule="gated", scale=1.0):
    """The op's documented recurrence, token by token (one head group per kv head: q_num_heads == kv_num_heads).

    q, k: [B, T, H, dk]; v: [B, T, H, dv]; state: [B, H, dk, dv]; decay: [B, T, H, dk] (per key dimension) or
    [B, T, H, 1] (per head), log space; beta: [B, T, H, 1].  Returns (o [B, T, H, dv], final state)::

        linear:      S = S + k v^T
        gated:       S = e^g S + k v^T
        delta:       S = S + beta k (v - S^T k)^T
        gated_delta: S = e^g S + beta k (v - (e^g S)^T k)^T          o_t = scale q_t^T S_t
    """
    if rule not in UPDATE_RULES:
        raise ValueError(f"rule must be one of {UPDATE_RULES}, got {rule!r}")
    out = []
    for t in range(q.shape[1]):
        if rule in ("gated", "gated_delta"):
            state = torch.exp(decay[:, t]).unsqueeze(-1) * state
        vt = v[:, t]
        if rule in ("delta", "gated_delta"):
            vt = beta[:, t] * (vt - torch.einsum("bhkv,bhk->bhv", state, k[:, t]))
        state = state + k[:, t].unsqueeze(-1) * vt.unsqueeze(-2)
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    return torch.stack(out, 1), state


def late_by_one(x: torch.Tensor) -> torch.Tensor:
    """[B, T, ...] -> [B, T + 1, ...]: token t - 1 at step t, zeros at step 0."""
    return torch.cat([torch.zeros_like(x[:, :1]), x], 1)


def wkv6_as_linear_attention(r, k, v, w_log, u, state, run=linear_attention_ref):
    """RWKV-6 through a ``gated`` LinearAttention: T + 1 steps whose step t writes token t - 1 (so S_t is
    RWKV-6's S_{t-1}, the state its token t reads) and decays by token t - 1's decay (step 0 by nothing); the
    query is r (one trailing step with q = 0 only carries the last token into the final state); scale 1; the
    bonus ``(r . u . k) v`` of the current token is added outside, O(T C)."""
    q = torch.cat([r, torch.zeros_like(r[:, :1])], 1)
    o, final = run(q, late_by_one(k), late_by_one(v), state, decay=late_by_one(w_log), rule="gated")
    bonus = (r * u * k).sum(-1, keepdim=True) * v
    return o[:, :-1] + bonus, final


def wkv6_inputs(B=2, T=23, H=3, N=8, seed=0, full_forgetting=False):
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    w_log = -torch.exp(torch.randn(B, T, H, N, generator=g) * 1.5 - 1)
    if full_forgetting:
        w_log[:, ::5, :, ::3] = -float("inf")
    u = torch.randn(H, N, generator=g)
    return r, k, v, w_log, u, torch.randn(B, H, N, N, generator=g)


@pytest.mark.parametrize("full_forgetting", [False, True])
def test_rwkv6_is_gated_linear_attention_one_token_late(full_forgetting):
    r, k, v, w_log, u, state = wkv6_inputs(seed=int(full_forgetting), full_forgetting=full_forgetting)
    want_y, want_state = wkv6_ref(r, k, v, w_log, u, state)
    y, final = wkv6_as_linear_attention(r, k, v, w_log, u, state)
    assert (y - want_y).abs().max() <= 1e-5 * want_y.abs().max()
    assert (final - want_state).abs().max() <= 1e-5 * want_state.abs().max()


def test_rwkv6_without_the_shift_is_not_rwkv6():
    """Why the one-token shift: fed on time, the op decays S_{t-1} by token t's decay and reads token t's own
    k v^T (weight q . k instead of the bonus r . u . k): a different result, which no per-token term undoes
    without dividing by the decay (e^{-w}, unbounded)."""
    r, k, v, w_log, u, state = wkv6_inputs(seed=3)
    want_y, _ = wkv6_ref(r, k, v, w_log, u, state)
    o, _ = linear_attention_ref(r, k, v, state, decay=w_log, rule="gated")
    bonus = (r * u * k).sum(-1, keepdim=True) * v
    assert (o + bonus - want_y).abs().max() > 0.1 * want_y.abs().max()


def test_bidirectional_wkv6_is_two_linear_attentions():
    """VRWKV6's Bi-WKV6: the forward and the reversed sequence from zero states, the bonus once."""
    r, k, v, w_log, u, _ = wkv6_inputs(B=1, T=30, seed=4)
    zero = torch.zeros(1, r.shape[2], r.shape[3], r.shape[3])
    no_bonus = torch.zeros_like(u)
    fwd, _ = wkv6_as_linear_attention(r, k, v, w_log, no_bonus, zero)
    bwd, _ = wkv6_as_linear_attention(*(x.flip(1) for x in (r, k, v, w_log)), no_bonus, zero)
    y = fwd + bwd.flip(1) + (r * u * k).sum(-1, keepdim=True) * v
    want = bi_wkv6_ref(r, k, v, w_log, u)
    assert (y - want).abs().max() <= 1e-5 * want.abs().max()


def transition(step, N: int) -> torch.Tensor:
    """The linear map of one step on a one-value-column state with nothing written: column j is the new state
    of the basis state e_j (``step``: [1, N, 1] -> [1, N, 1])."""
    basis = torch.eye(N, dtype=torch.float64)
    return torch.stack([step(basis[j].view(1, N, 1))[0, :, 0] for j in range(N)], -1)


def rank_one_ratio(A: torch.Tensor) -> torch.Tensor:
    """For A = D + x y^T (D diagonal, generic x, y, N >= 3): y_j / (x_j D_jj) up to one common factor, from
    the off-diagonal entries only (x_i y_j = A_ij for i != j fixes x y^T, then D = diag(A - x y^T))."""
    N = A.shape[0]
    i0, i1 = 0, 1
    y = torch.stack([A[i0, j] if j != i0 else A[i1, j] * A[i0, 2] / A[i1, 2] for j in range(N)])  # y up to scale
    x = torch.stack([A[i, 2] / y[2] if i != 2 else A[i, 0] / y[0] for i in range(N)])
    D = torch.diagonal(A) - x * y
    ratio = y / (x * D)
    return ratio / ratio[0]


def test_gated_delta_transitions_satisfy_the_rank_one_constraint():
    """Every gated_delta step maps the state by (I - beta k k^T) diag(e^g) = diag(e^g) + x y^T with
    y = e^g . k and x = -beta k: y_j / (x_j e^{g_j}) is the same for every j."""
    g = torch.Generator().manual_seed(5)
    N = 6
    key = torch.randn(N, generator=g, dtype=torch.float64)
    key = key / key.norm()
    g_log = -torch.rand(N, generator=g, dtype=torch.float64)

    def step(S):                                                      # S: [1, N, 1] -> one head, B = 1
        q = torch.zeros(1, 1, 1, N, dtype=torch.float64)
        _, new = linear_attention_ref(q, key.view(1, 1, 1, N), torch.zeros(1, 1, 1, 1, dtype=torch.float64),
                                      S.view(1, 1, N, 1), decay=g_log.view(1, 1, 1, N),
                                      beta=torch.full((1, 1, 1, 1), 0.7, dtype=torch.float64), rule="gated_delta")
        return new.view(1, N, 1)

    ratio = rank_one_ratio(transition(step, N))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-9)


def test_rwkv7_transitions_break_it():
    """RWKV-7 (a = -kk, b = kk * iclr as the model passes them): diag(e^w) + b a^T has y_j / (x_j e^{w_j}) =
    -1 / (iclr_j e^{w_j}), which varies over j (iclr and w are per channel), so no (g, beta, k) of gated_delta
    gives the same state; and its write k v^T uses a third vector where gated_delta writes beta k."""
    g = torch.Generator().manual_seed(6)
    N = 6
    kk = torch.randn(N, generator=g, dtype=torch.float64)
    kk = kk / kk.norm()
    iclr = torch.rand(N, generator=g, dtype=torch.float64)
    w_log = -torch.exp(torch.tensor(-0.5, dtype=torch.float64)) * torch.rand(N, generator=g, dtype=torch.float64)

    def step(S):
        zero = torch.zeros(1, 1, N, dtype=torch.float64)
        _, new = wkv7_step(zero, w_log.view(1, 1, N), zero, zero[..., :1], (-kk).view(1, 1, N),
                           (kk * iclr).view(1, 1, N), S.view(1, 1, N, 1).float())   # the state is fp32
        return new.view(1, N, 1).double()

    ratio = rank_one_ratio(transition(step, N))
    expected = (iclr * torch.exp(w_log))[0] / (iclr * torch.exp(w_log))   # -1/(iclr e^w), normalised at j = 0
    assert torch.allclose(ratio, expected, rtol=1e-4)                       # wkv7_step computes in fp32
    assert (ratio - 1).abs().max() > 0.1


# ---- the reading of the spec against the implementations that ship it ----------------------------------------

def _onnx_linear_attention(B, T, H, dk, dv, rule):
    from onnx import TensorProto, helper

    inputs = ["query", "key", "value", "past_state", "decay" if rule in ("gated", "gated_delta") else "",
              "beta" if rule in ("delta", "gated_delta") else ""]
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node("LinearAttention", inputs, ["output", "present_state"], update_rule=rule,
                            q_num_heads=H, kv_num_heads=H, scale=1.0)
    shapes = {"query": [B, T, H * dk], "key": [B, T, H * dk], "value": [B, T, H * dv], "past_state": [B, H, dk, dv],
              "decay": [B, T, H * dk], "beta": [B, T, H]}
    graph = helper.make_graph([node], "la", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n])
                                             for n in inputs if n],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [B, T, H * dv]),
                               helper.make_tensor_value_info("present_state", TensorProto.FLOAT, [B, H, dk, dv])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 27)])
    model.ir_version = 11
    return model


@pytest.mark.export
@pytest.mark.parametrize("rule", UPDATE_RULES)
def test_reference_reading_matches_onnx_runtime(rule):
    import onnx

    if "LinearAttention" not in {s.name for s in onnx.defs.get_all_schemas()}:
        pytest.skip(f"onnx {onnx.__version__} has no LinearAttention (opset 27)")
    import onnxruntime as ort

    B, T, H, dk, dv = 2, 9, 2, 4, 3
    g = torch.Generator().manual_seed(7)
    q, k = (torch.randn(B, T, H, dk, generator=g) for _ in range(2))
    k = k / k.norm(dim=-1, keepdim=True)
    v = torch.randn(B, T, H, dv, generator=g)
    state = torch.randn(B, H, dk, dv, generator=g)
    decay = -torch.rand(B, T, H, dk, generator=g)
    beta = torch.rand(B, T, H, 1, generator=g)
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    want_o, want_s = linear_attention_ref(q, k, v, state, decay if gated else None, beta if delta else None, rule)
    feeds = {"query": q.reshape(B, T, -1), "key": k.reshape(B, T, -1), "value": v.reshape(B, T, -1),
             "past_state": state, "decay": decay.reshape(B, T, -1), "beta": beta.reshape(B, T, H)}
    model = _onnx_linear_attention(B, T, H, dk, dv, rule)
    names = [i.name for i in model.graph.input]
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:                   # an onnxruntime without the op: say so instead of failing
        pytest.skip(f"onnxruntime {ort.__version__} cannot run LinearAttention: {str(e)[:120]}")
    o, s = sess.run(None, {n: feeds[n].numpy() for n in names})
    assert np.abs(o - want_o.reshape(B, T, -1).numpy()).max() <= 1e-5 * max(1.0, float(want_o.abs().max()))
    assert np.abs(s - want_s.numpy()).max() <= 1e-5 * max(1.0, float(want_s.abs().max()))
    from onnx.reference import ReferenceEvaluator
    o2, s2 = ReferenceEvaluator(model).run(None, {n: feeds[n].numpy() for n in names})
    assert np.abs(o2 - o).max() <= 1e-5 * max(1.0, float(np.abs(o).max()))


@pytest.mark.export
@pytest.mark.parametrize("full_forgetting", [False, True])
def test_rwkv6_through_onnx_runtimes_linear_attention(full_forgetting):
    """The RWKV-6 mapping run by ONNX Runtime's own LinearAttention kernel, not only by the reading of the spec
    (log decays of -inf included: exp(-inf) = 0 forgets exactly)."""
    import onnx

    if "LinearAttention" not in {s.name for s in onnx.defs.get_all_schemas()}:
        pytest.skip(f"onnx {onnx.__version__} has no LinearAttention (opset 27)")
    import onnxruntime as ort

    r, k, v, w_log, u, state = wkv6_inputs(B=2, T=17, H=2, N=8, seed=8, full_forgetting=full_forgetting)
    B, T, H, N = r.shape
    model = _onnx_linear_attention(B, T + 1, H, N, N, "gated")
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:
        pytest.skip(f"onnxruntime {ort.__version__} cannot run LinearAttention: {str(e)[:120]}")

    def run(q, kk, vv, s, decay, rule):
        o, final = sess.run(None, {"query": q.reshape(B, T + 1, -1).numpy(), "key": kk.reshape(B, T + 1, -1).numpy(),
                                   "value": vv.reshape(B, T + 1, -1).numpy(), "past_state": s.numpy(),
                                   "decay": decay.reshape(B, T + 1, -1).numpy()})
        return torch.from_numpy(o).view(B, T + 1, H, N), torch.from_numpy(final)

    y, final = wkv6_as_linear_attention(r, k, v, w_log, u, state, run=run)
    want_y, want_state = wkv6_ref(r, k, v, w_log, u, state)
    assert (y - want_y).abs().max() <= 1e-5 * want_y.abs().max()
    assert (final - want_state).abs().max() <= 1e-5 * want_state.abs().max()
