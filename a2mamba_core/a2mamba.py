"""A2Mamba: Attention-augmented State Space Models for Visual Recognition.

Paper: Meng Lou, Yunxiang Fu, Yizhou Yu, arXiv 2507.16624. This is a re-implementation of
the authors' classification model (https://github.com/LMMMEng/A2Mamba): architecture,
hyper-parameters and state_dict names are theirs, so the released ``a2mamba_*.pth``
checkpoints load unchanged; the ops behind it are this project's (:mod:`ops`).

Network: a convolutional stem (stride 4), four stages of blocks separated by stride-2
conv+BN downsamples, and a conv head (1x1 conv -> BN -> SiLU -> pool -> 1x1 conv). Each
block is ``x + cpe1(x)``, ``x + MASS(LN(x))``, ``x + cpe2(x)``, ``x + FFN(LN(x))``.

MASS (the token mixer) splits the heads in two halves. Half 1 runs a k x k neighborhood
attention; half 2 a dilated one (dilation ``min(H // k, k)``) over ``v1_out + v2``. In
stages 1-3, A2SSM then runs a selective scan over the concatenated result and aggregates
its hidden states a second time with the *same* two attention maps, before ``C``
projects them. Stage 4 replaces A2SSM with a global attention over the same result.

Small inputs: the authors' model needs every stage map to be at least the window (it
fails below 224 px). Here an axis shorter than the window becomes global (the window is
clamped to the map; rpb indexing unchanged) and the second scale's dilation is at least
1, which changes nothing where the official model runs (see :mod:`ops.neighborhood_attention`).
"""
import math
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

import ops

from .checkpoint import load_pretrained
from .hub import RELEASED_WEIGHTS

__all__ = ['A2Mamba', 'MASS', 'A2SSM', 'Block', 'Stage', 'RoPE', 'apply_rope', 'compute_dtype', 'create_model',
           'list_models', 'MODEL_SPECS', 'ARCHS', 'checkpoint_counts', 'compile_in_place']


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth per sample: zero a residual branch for a random subset of the batch."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (eps 1e-6, as the authors)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # [B, C, H, W] -> [B, H, W, C]
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]


class LayerScale(nn.Module):
    """Per-channel scale and bias, stored as a depthwise 1x1 conv (``weight: (C, 1, 1, 1)``)."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim, 1, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class RoPE(nn.Module):
    """2-D rotary position embedding: half of each head's channels rotate with the row,
    half with the column. ``angle`` is a buffer saved in the checkpoints."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        head_dim = embed_dim // num_heads
        if head_dim % 4:
            raise ValueError(f'RoPE needs head_dim divisible by 4, got {head_dim}')
        self.query_scale = head_dim ** -0.5
        angle = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 4))
        self.register_buffer('angle', angle.repeat_interleave(2))

    def forward(self, height: int, width: int, dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
        """``(cos, sin)`` of an ``H x W`` map as :func:`apply_rope` reads them: each
        ``(2, 1, 1, H, W, head_dim)``, row 0 for the queries, row 1 for the keys, with the sign of
        the rotation folded into ``sin`` and the attention's ``1 / sqrt(head_dim)`` into the
        queries' row. Computed in float32 (float64 for a float64 model: phases of up to ``side``
        radians lose too much in 16 bits), then cast to ``dtype`` (default: kept), the dtype the
        stage's q and k will have, once for all its blocks."""
        angle = self.angle.to(wide_dtype(self.angle.dtype))
        rows = torch.arange(height, device=angle.device, dtype=angle.dtype)[:, None] * angle
        cols = torch.arange(width, device=angle.device, dtype=angle.dtype)[:, None] * angle
        phase = torch.cat([rows[:, None, :].expand(height, width, -1),
                           cols[None, :, :].expand(height, width, -1)], dim=-1)
        # channel pairs (2i, 2i+1) rotate as (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)
        sign = 1.0 - 2.0 * (torch.arange(phase.shape[-1], device=angle.device) % 2 == 0).to(angle.dtype)
        cos, sin = phase.cos(), phase.sin() * sign
        tables = (torch.stack([cos * self.query_scale, cos])[:, None, None],
                  torch.stack([sin * self.query_scale, sin])[:, None, None])
        return tables if dtype is None else tuple(t.to(dtype) for t in tables)


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the authors' float32 islands for a model of ``dtype``: float32, or float64 for
    a float64 model."""
    return torch.promote_types(dtype, torch.float32)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype convolutions produce from ``x`` here: autocast's where it is on for ``x``'s
    device and casts ``x`` (it leaves float64 alone), else ``x``'s own."""
    if x.dtype != torch.float64 and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def apply_rope(qk: Tensor, tables: Tuple[Tensor, Tensor]) -> Tensor:
    """Rotates channel pairs ``(x[2i], x[2i+1])`` of ``qk: (2, B, heads, H, W, C)`` (queries, keys)
    by the RoPE phase, the queries also scaled by ``1 / sqrt(C)``: three elementwise passes, with
    ``tables = (cos, sin)`` from :meth:`RoPE.forward`.

    The result keeps ``qk``'s dtype: under autocast q and k stay 16-bit, which halves the
    attention kernels' reads (the phases themselves are computed in float32)."""
    cos, sin = (t.to(qk.dtype) for t in tables)  # no-ops where the stage cast them already
    swapped = qk.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x[2i+1], x[2i]) per pair
    return torch.addcmul(qk * cos, swapped, sin)


def heads_to_map(x: Tensor) -> Tensor:
    """``(B, heads, H, W, C) -> (B, heads * C, H, W)``; a view for the channels-first head
    layout that ``ops.na2d`` returns for channels-first values."""
    return rearrange(x, 'b n h w c -> b (n c) h w')


class A2SSM(nn.Module):
    """Attention-augmented SSM: a selective scan whose hidden states are aggregated over
    each pixel's neighborhood with MASS's attention maps before ``C`` reads them out.

    The state size is 1 (as the authors), so the ``C`` readout is a per-pixel scale.
    """

    def __init__(self, d_model: int, num_heads: int, d_conv: int = 5, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_model = d_model
        self.d_state = 1
        self.dt_rank = math.ceil(d_model / 16)
        self.conv2d = nn.Conv2d(d_model, d_model, kernel_size=d_conv, padding=d_conv // 2, groups=d_model)
        self.act = nn.SiLU()
        # [dt_rank + 2 * d_state, D]: projects each pixel to (dt, B, C)
        self.x_proj_weight = nn.Parameter(torch.empty(self.dt_rank + 2 * self.d_state, d_model))
        nn.init.kaiming_uniform_(self.x_proj_weight, a=math.sqrt(5))
        self.dt_projs_weight = nn.Parameter(torch.empty(d_model, self.dt_rank))
        nn.init.uniform_(self.dt_projs_weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        # softplus(bias) log-uniform in [dt_min, dt_max] at initialisation (Mamba's S6 init)
        dt = torch.exp(torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs = nn.Parameter(torch.zeros(d_model, self.d_state))  # log(1): S4D-real A = -1
        self.Ds = nn.Parameter(torch.ones(d_model))
        self.state_fusion = nn.Conv2d(num_heads, num_heads, kernel_size=1)

    def forward(self, x: Tensor, scales: Tuple[ops.Neighborhood, ops.Neighborhood]) -> Tensor:
        """Args:
            x: ``(B, C, H, W)``, MASS's two-scale attention output.
            scales: MASS's two attention scales, applied here to the hidden states.

        Returns:
            ``(B, C, H, W)``, float32 under autocast (the authors' readout), else the model's dtype.
        """
        b, c, height, width = x.shape
        x = self.act(self.conv2d(x))
        xs = x.flatten(2)  # [B, D, L]
        # batched products with the weight broadcast (batch stride 0): torch.matmul would fold the
        # batch into the pixels, copying the maps to [B * L, D] and its result back to [B, R, L]
        x_dbl = torch.bmm(self.x_proj_weight.expand(b, -1, -1), xs)  # [B, R + 2N, L]
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        dts = torch.bmm(self.dt_projs_weight.expand(b, -1, -1), dts)  # [B, D, L], contiguous for the scan
        wide = wide_dtype(self.Ds.dtype)
        states = ops.selective_scan_states(xs, dts, -torch.exp(self.A_logs.to(wide)), Bs,
                                           delta_bias=self.dt_projs_bias.to(wide), delta_softplus=True)
        # [B, D, 1, L] -> two halves of heads, (B, heads/2, H, W, d) views of the states
        half_heads = self.state_fusion.in_channels // 2
        states = rearrange(states, 'b (m n d) s (h w) -> m b n h w (d s)', m=2, n=half_heads, h=height)
        states = torch.cat([rearrange(scale(states[i]), 'b n h w d -> b n d (h w)')
                            for i, scale in enumerate(scales)], dim=1)
        states = self.state_fusion(states.to(self.state_fusion.weight.dtype)).flatten(1, 2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            # the authors keep the readout in float32 for training stability. One wide operand per
            # product suffices: the other is widened inside the kernel (exactly), which saves the
            # 16-bit maps a cast each and keeps them, not float32 copies, for the backward
            y = states * Cs.to(wide) + xs * self.Ds.to(wide)[:, None]
        return y.view(b, c, height, width).to(self.Ds.dtype)


def _dilation_along(side: Union[int, torch.SymInt], kernel: int) -> Union[int, torch.SymInt]:
    """``max(1, min(side // kernel, kernel))``. A symbolic side (torch.export, ONNX) takes
    ``torch.sym_min/sym_max``, which keep it symbolic without a guard; a plain int takes Python's
    min/max, since Dynamo (torch 2.11) breaks the graph on ``torch.sym_min`` of two ints."""
    if isinstance(side, torch.SymInt):
        return torch.sym_max(1, torch.sym_min(side // kernel, kernel))
    return max(1, min(side // kernel, kernel))


class MASS(nn.Module):
    """Multi-scale Attention-augmented State Space model: A2Mamba's token mixer.

    Args:
        embed_dim: channels ``C``.
        num_heads: attention heads; half run the plain window, half the dilated one.
        window_size: odd neighborhood size ``k``.
        global_mode: stage 4: a global attention replaces A2SSM.
        image_size: ``(H, W)`` of this stage at 224 px, the size of the global bias.
    """

    def __init__(self, embed_dim: int, num_heads: int, window_size: int, global_mode: bool = False,
                 image_size: Tuple[int, int] = (7, 7)):
        super().__init__()
        if num_heads % 2 or embed_dim % num_heads:
            raise ValueError(f'MASS needs an even head count dividing the channels, got '
                             f'{num_heads} heads for {embed_dim} channels')
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.window_size = ops.normalize_window_args(window_size, 1)[0]
        self.global_mode = global_mode
        self.qkv = nn.Conv2d(embed_dim, embed_dim * 3, kernel_size=1)
        self.gate = nn.Sequential(nn.Conv2d(embed_dim, embed_dim, kernel_size=1), nn.BatchNorm2d(embed_dim), nn.SiLU())
        self.lepe = nn.Conv2d(embed_dim, embed_dim, kernel_size=5, padding=2, groups=embed_dim)
        self.norm = LayerNorm2d(embed_dim)
        self.proj = nn.Sequential(LayerNorm2d(embed_dim), nn.Conv2d(embed_dim, embed_dim, kernel_size=1))
        if not global_mode:
            self.ssm = A2SSM(embed_dim, num_heads)
        kh, kw = self.window_size
        # One bias shared by both scales: the authors' checkpoints store it twice (rpb.0/.1).
        window_bias = nn.Parameter(torch.zeros(num_heads // 2, 2 * kh - 1, 2 * kw - 1))
        biases = [window_bias, window_bias]
        if global_mode:
            tokens = image_size[0] * image_size[1]
            biases.append(nn.Parameter(torch.zeros(1, num_heads, tokens, tokens)))
        self.rpb = nn.ParameterList(biases)

    def dilation(self, height: int, width: int) -> Tuple[int, int]:
        """Dilation of the second scale on an ``H x W`` map: ``min(side // k, k)``, at least 1."""
        kh, kw = self.window_size
        return _dilation_along(height, kh), _dilation_along(width, kw)

    def split_heads(self, qkv: Tensor, pos_enc: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """``q, k, v: (B, heads, H, W, hd)`` from the ``qkv`` projection ``(B, 3C, H, W)``, with
        RoPE applied to ``q`` (also scaled) and ``k``: the inputs of :meth:`attention_maps`."""
        q_k_v = rearrange(qkv, 'b (m n c) h w -> m b n h w c', m=3, n=self.num_heads)
        # q and k rotate in one pass: half the (launch-bound, on GPU) elementwise kernels
        q, k = apply_rope(q_k_v[:2], pos_enc)
        return q, k, q_k_v[2]

    def neighborhoods(self, q: Tensor, k: Tensor) -> Tuple[ops.Neighborhood, ops.Neighborhood]:
        """The two attention scales for ``q, k: (B, heads, H, W, hd)`` (RoPE applied): the plain
        window over the first half of the heads, the dilated one over the second."""
        height, width = q.shape[2:4]
        q1, q2 = q.chunk(2, dim=1)
        k1, k2 = k.chunk(2, dim=1)
        return (ops.Neighborhood(q1, k1, self.window_size, 1, self.rpb[0]),
                ops.Neighborhood(q2, k2, self.window_size, self.dilation(height, width), self.rpb[1]))

    def attention_maps(self, q: Tensor, k: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor]:
        """Softmaxed maps of both scales for ``q, k: (B, heads, H, W, hd)`` (RoPE applied)."""
        return tuple(scale.maps() for scale in self.neighborhoods(q, k))

    def global_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Stage-4 attention of every token to every token, with the 224-px bias resized."""
        b, heads, height, width, dim = q.shape
        q, k, v = (t.reshape(b, heads, height * width, dim) for t in (q, k, v))
        attn = q @ k.transpose(-1, -2)  # [B, n, L, L]
        bias = self.rpb[2]
        # traced for export the token count is symbolic: resize always (identity at 224 px)
        if ops.is_traceable() or bias.shape[2:] != attn.shape[2:]:
            bias = F.interpolate(bias, size=attn.shape[2:], mode='bicubic', align_corners=False)
        attn = (attn + bias).softmax(dim=-1)
        return heads_to_map((attn @ v).unflatten(2, (height, width)))

    def forward(self, x: Tensor, pos_enc: Tuple[Tensor, Tensor]) -> Tensor:
        b, c, height, width = x.shape
        gate = self.gate(x)
        qkv = self.qkv(x)
        lepe = self.lepe(qkv[:, 2 * c:])
        q, k, v = self.split_heads(qkv, pos_enc)

        scales = self.neighborhoods(q, k)
        v1, v2 = v.chunk(2, dim=1)
        v1 = scales[0](v1)
        v2 = scales[1](v1 + v2)
        if self.global_mode:
            x = self.global_attention(q, k, torch.cat([v1, v2], dim=1))
        else:
            x = self.ssm(torch.cat([heads_to_map(v1), heads_to_map(v2)], dim=1), scales)
        x = self.norm(x) + lepe
        with torch.autocast(device_type=x.device.type, enabled=False):
            # the authors keep the gating and output projection in float32 (under autocast; a model
            # cast to 16 bits gates in float32 and projects in its own dtype)
            wide = wide_dtype(x.dtype)
            # the 16-bit gate is widened inside the product (as in the readout)
            x = self.proj((x.to(wide) * gate).to(self.proj[1].weight.dtype))
        return x

    def extra_repr(self) -> str:
        return f'heads={self.num_heads}, window={self.window_size}, global_mode={self.global_mode}'


class FFN(nn.Module):
    """1x1 conv -> GELU -> residual 3x3 depthwise conv -> 1x1 conv."""

    def __init__(self, embed_dim: int, ffn_dim: int, act_layer: Type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Conv2d(embed_dim, ffn_dim, kernel_size=1)
        self.act_layer = act_layer()
        self.dwconv = nn.Conv2d(ffn_dim, ffn_dim, kernel_size=3, padding=1, groups=ffn_dim)
        self.fc2 = nn.Conv2d(ffn_dim, embed_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_layer(self.fc1(x))
        x = x + self.dwconv(x)
        return self.fc2(x)


class Block(nn.Module):
    """Conv position encoding + MASS, then conv position encoding + FFN, each residual.

    ``layer_scale='branch'`` scales the branch (``x + s * f(x)``); ``'residual'`` scales the
    shortcut (``s * x + f(x)``, the authors' ``resscale``); ``None`` scales nothing.
    """

    def __init__(self, embed_dim: int, num_heads: int, window_size: int, ffn_dim: int,
                 global_mode: bool = False, image_size: Tuple[int, int] = (7, 7), drop_path: float = 0.0,
                 layer_scale: Optional[str] = None, layer_scale_init: float = 1.0,
                 norm_layer: Type[nn.Module] = LayerNorm2d):
        super().__init__()
        if layer_scale not in (None, 'branch', 'residual'):
            raise ValueError(f"layer_scale must be None, 'branch' or 'residual', got {layer_scale!r}")
        self.layer_scale = layer_scale
        self.cpe1 = nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1, groups=embed_dim)
        self.norm1 = norm_layer(embed_dim)
        self.token_mixer = MASS(embed_dim, num_heads, window_size, global_mode, image_size)
        self.cpe2 = nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1, groups=embed_dim)
        self.norm2 = norm_layer(embed_dim)
        self.mlp = FFN(embed_dim, ffn_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if layer_scale:
            self.layer_scale1 = LayerScale(embed_dim, layer_scale_init)
            self.layer_scale2 = LayerScale(embed_dim, layer_scale_init)
        else:
            self.layer_scale1 = self.layer_scale2 = nn.Identity()

    def forward(self, x: Tensor, pos_enc: Tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.cpe1(x)
        x = self._residual(x, self.token_mixer(self.norm1(x), pos_enc), self.layer_scale1)
        x = x + self.cpe2(x)
        return self._residual(x, self.mlp(self.norm2(x)), self.layer_scale2)

    def _residual(self, x: Tensor, branch: Tensor, scale: nn.Module) -> Tensor:
        if self.layer_scale == 'residual':
            return scale(x) + self.drop_path(branch)
        return x + self.drop_path(scale(branch))


class _BatchNormBuffersAside:
    """Context of a checkpointed block's recomputation in backward: its BatchNorms update fresh
    copies of their running statistics, and the originals are put back on exit. The recomputed
    forward is then the original one, op for op (batch statistics, the same saved tensors), but
    the running statistics and ``num_batches_tracked`` advance once per step, as without
    checkpointing. Copies rather than a write-back: the originals' version counters stay
    untouched, and any number of forwards may precede the backward."""

    def __init__(self, module: nn.Module):
        self.batch_norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        self.originals: List[Tuple[nn.Module, str, Tensor]] = []

    def __enter__(self) -> None:
        for module in self.batch_norms:
            for name in ('running_mean', 'running_var', 'num_batches_tracked'):
                buffer = getattr(module, name)
                if buffer is not None:
                    self.originals.append((module, name, buffer))
                    setattr(module, name, buffer.clone())

    def __exit__(self, *exc_info) -> None:
        for module, name, buffer in self.originals:
            setattr(module, name, buffer)
        self.originals = []


class Stage(nn.Module):
    """The blocks of one resolution, sharing one RoPE (the authors' ``BasicLayer``).

    ``use_checkpoint``: how many of the first blocks recompute activations in backward (their
    BatchNorm statistics are updated once per step all the same).
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, use_checkpoint: int = 0,
                 drop_path: Sequence[float] = (), **block_kwargs):
        super().__init__()
        self.embed_dim = embed_dim
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.rope = RoPE(embed_dim, num_heads)
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, drop_path=drop_path[i], **block_kwargs) for i in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        pos_enc = self.rope(x.shape[2], x.shape[3], compute_dtype(x))
        for i, block in enumerate(self.blocks):
            if i < self.use_checkpoint and x.requires_grad:
                if torch.compiler.is_compiling():
                    # a compiled checkpoint is a graph region whose recomputation does not apply
                    # the buffer updates again (and Dynamo rejects a context_fn)
                    x = checkpoint(block, x, pos_enc, use_reentrant=False)
                else:
                    x = checkpoint(block, x, pos_enc, use_reentrant=False,
                                   context_fn=lambda block=block: (nullcontext(), _BatchNormBuffersAside(block)))
            else:
                x = block(x, pos_enc)
        return x


def conv_bn(in_chs: int, out_chs: int, stride: int) -> List[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_chs)]


def stem(in_chans: int, embed_dim: int) -> nn.Sequential:
    """Four 3x3 conv-BN layers (two with stride 2), GELU between them."""
    half = embed_dim // 2
    return nn.Sequential(*conv_bn(in_chans, half, 2), nn.GELU(), *conv_bn(half, half, 1), nn.GELU(),
                         *conv_bn(half, embed_dim, 2), nn.GELU(), *conv_bn(embed_dim, embed_dim, 1))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checkpoint_counts(use_checkpoint: Union[bool, int, Sequence[int]], depths: Sequence[int]) -> List[int]:
    """Per stage, how many leading blocks recompute their activations in backward.

    Args:
        use_checkpoint: ``True`` (every block; ``with_cp=True`` of the mm backbones) or
            ``False``; an int ``n`` in ``[0, max(depths)]`` (the first ``n`` blocks of each
            stage, all of a shorter one); or one count in ``[0, depth]`` per stage.
        depths: blocks per stage.

    Raises:
        ValueError: any other value.
    """
    if isinstance(use_checkpoint, bool):
        return list(depths) if use_checkpoint else [0] * len(depths)
    if _is_int(use_checkpoint):
        if not 0 <= use_checkpoint <= max(depths):
            raise ValueError(f'use_checkpoint={use_checkpoint} is outside [0, {max(depths)}] (the deepest stage '
                             f'has {max(depths)} blocks)')
        return [min(use_checkpoint, depth) for depth in depths]
    counts = list(use_checkpoint) if isinstance(use_checkpoint, Sequence) else None
    if (counts is None or len(counts) != len(depths)
            or not all(_is_int(c) and 0 <= c <= d for c, d in zip(counts, depths))):
        raise ValueError(f'use_checkpoint must be a bool, an int, or {len(depths)} block counts each between 0 and '
                         f'the stage depth {tuple(depths)}; got {use_checkpoint!r}')
    return counts


class A2Mamba(nn.Module):
    """A2Mamba backbone and classifier.

    Args:
        embed_dims, depths, num_heads, window_sizes, mlp_ratios: per stage.
        layer_scales: per stage, ``None``, ``'branch'`` or ``'residual'`` (see :class:`Block`).
        layer_scale_inits: per stage, the initial layer scale.
        image_size: training resolution; sizes the stage-4 global bias (resized at run time).
        num_classes: classes of the head; 0 keeps the head's conv-BN-SiLU-pool only.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this rate.
        use_checkpoint: activation checkpointing (see :func:`checkpoint_counts`): ``True`` for
            every block, an int for that many leading blocks of each stage, or one count per stage.
        in_chans: input channels.
        projection: channels of the head's hidden 1x1 conv.
    """

    def __init__(self, embed_dims: Sequence[int], depths: Sequence[int], num_heads: Sequence[int],
                 window_sizes: Sequence[int] = (11, 9, 7, 7), mlp_ratios: Sequence[float] = (4, 4, 3, 3),
                 layer_scales: Sequence[Optional[str]] = (None,) * 4,
                 layer_scale_inits: Sequence[float] = (1.0,) * 4, image_size: Union[int, Tuple[int, int]] = 224,
                 num_classes: int = 1000, drop_path_rate: float = 0.0,
                 use_checkpoint: Union[bool, int, Sequence[int]] = 0, in_chans: int = 3, projection: int = 1024):
        super().__init__()
        num_stages = len(depths)
        if not all(len(v) == num_stages for v in (embed_dims, num_heads, window_sizes, mlp_ratios)):
            raise ValueError('embed_dims, depths, num_heads, window_sizes and mlp_ratios need one value per stage')
        if not _is_int(num_classes) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0: no classifier), got {num_classes!r}')
        if (isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float))
                or not 0.0 <= drop_path_rate < 1.0):
            # at 1 every residual branch is dropped and the rescaling divides by zero
            raise ValueError(f'drop_path_rate must be a number in [0, 1), got {drop_path_rate!r}')
        if not _is_int(in_chans) or in_chans < 1:
            raise ValueError(f'in_chans must be a positive int, got {in_chans!r}')
        use_checkpoint = checkpoint_counts(use_checkpoint, depths)
        image_size = ((image_size, image_size) if _is_int(image_size)
                      else tuple(image_size) if isinstance(image_size, Sequence) else ())
        if len(image_size) != 2 or not all(_is_int(side) and side > 0 for side in image_size):
            raise ValueError(f'image_size must be a positive int or (height, width), got {image_size!r}')
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.num_features = embed_dims[-1]
        self.head_hidden_size = projection
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=f'layers.{2 * i}')
                             for i in range(num_stages)]

        self.patch_embed = stem(in_chans, embed_dims[0])
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            self.layers.append(Stage(
                embed_dims[i], depths[i], num_heads[i], use_checkpoint=use_checkpoint[i],
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], window_size=window_sizes[i],
                ffn_dim=int(mlp_ratios[i] * embed_dims[i]), global_mode=i == num_stages - 1,
                image_size=(image_size[0] // 2 ** (i + 2), image_size[1] // 2 ** (i + 2)),
                layer_scale=layer_scales[i], layer_scale_init=layer_scale_inits[i]))
            if i < num_stages - 1:
                self.layers.append(nn.Sequential(*conv_bn(embed_dims[i], embed_dims[i + 1], 2)))
            else:
                self.layers.append(nn.Identity())
        self.classifier = nn.Sequential(
            nn.Conv2d(self.num_features, projection, kernel_size=1), nn.BatchNorm2d(projection), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(projection, num_classes, kernel_size=1) if num_classes > 0 else nn.Identity())
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # The official module layout interleaves stages and downsamples in one list:
    # ``layers[2i]`` is stage i, ``layers[2i - 1]`` the stride-2 downsample into it, and a
    # trailing Identity follows the last stage. These methods are the only readers of it.

    @property
    def num_stages(self) -> int:
        """Stages this model runs (fewer after :meth:`prune_intermediate_layers`)."""
        return (len(self.layers) + 1) // 2

    @property
    def stages(self) -> List[Stage]:
        return [self.stage(i) for i in range(self.num_stages)]

    def stage(self, index: int) -> Stage:
        """Stage ``index`` (0-based) of the model's stages."""
        return self.layers[2 * self._stage_index(index)]

    def downsample(self, index: int) -> Optional[nn.Module]:
        """The stride-2 conv-BN into stage ``index`` (0-based); None for stage 0, which the stem feeds."""
        index = self._stage_index(index)
        return self.layers[2 * index - 1] if index else None

    def _stage_index(self, index: int) -> int:
        if not _is_int(index) or not 0 <= index < self.num_stages:
            raise IndexError(f'stage index must be an int in [0, {self.num_stages - 1}], got {index!r}')
        return index

    def _take_indices(self, indices: Optional[Union[int, Sequence[int]]]) -> List[int]:
        """timm's stage selection: None for all, an int ``n`` for the last ``n``, or a sequence of
        stage indices (negative ones count from the last); returned sorted."""
        num = self.num_stages
        if indices is None:
            return list(range(num))
        if _is_int(indices):
            if not 0 < indices <= num:
                raise ValueError(f'indices={indices} asks for the last {indices} stages; the model has {num}')
            return list(range(num - indices, num))
        if not isinstance(indices, Sequence) or isinstance(indices, str) or not indices:
            raise ValueError(f'indices must be None, an int (the last n stages) or a non-empty sequence of '
                             f'stage indices; got {indices!r}')
        if not all(_is_int(i) and -num <= i < num for i in indices):
            raise ValueError(f'stage indices must be ints in [{-num}, {num - 1}], got {indices!r}')
        take = sorted(i % num for i in indices)
        if len(set(take)) != len(take):
            raise ValueError(f'indices repeats a stage: {indices!r}')
        return take

    def forward_intermediates(self, x: Tensor, indices: Optional[Union[int, Sequence[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """The stage maps named by ``indices`` (timm's API).

        Args:
            x: ``(B, in_chans, H, W)`` images.
            indices: None (every stage), an int ``n`` (the last ``n``) or stage indices
                (negative ones count from the last); the maps come in stage order.
            norm: must be False: A2Mamba has no final norm (its head starts with a conv-BN), so
                the maps are the stages' own.
            stop_early: run no stage after the last one asked for (the returned final map is then
                that stage's).
            output_fmt: ``'NCHW'``, the only layout.
            intermediates_only: return the list of maps alone.

        Returns:
            the maps, or ``(final map, maps)`` where the final map is what :meth:`forward_head` reads.

        Raises:
            ValueError: bad ``indices``, ``norm=True`` or another ``output_fmt``.
        """
        if norm:
            raise ValueError('norm=True: A2Mamba has no final norm to apply; its stage maps are returned as they are')
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW' (A2Mamba's only layout), got {output_fmt!r}")
        take = self._take_indices(indices)
        self.check_input(x)
        last = take[-1] if stop_early or intermediates_only else self.num_stages - 1
        x = self.patch_embed(x)
        intermediates = []
        for i in range(last + 1):
            if i:
                x = self.downsample(i)(x)
            x = self.stage(i)(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_head: bool = True) -> List[int]:
        """Drops the stages (and downsamples) after the last of ``indices`` (as in
        :meth:`forward_intermediates`) and, with ``prune_head``, the classifier; the kept modules
        keep their names. Returns the resolved stage indices."""
        take = self._take_indices(indices)
        self.layers = self.layers[:2 * take[-1] + 1]
        if prune_head:
            self.classifier = nn.Identity()
            self.num_classes = 0
        return take

    def group_matcher(self, coarse: bool = False) -> Dict[str, Union[str, List[Tuple[str, Optional[Tuple[int]]]]]]:
        """timm's parameter grouping (layer-wise lr decay) over the official names: the stem,
        then one group per stage (``coarse``) or per block, the downsample into a stage sharing
        its first block's group; the classifier last."""
        matcher: Dict[str, Union[str, List[Tuple[str, Optional[Tuple[int]]]]]] = {'stem': r'^patch_embed\.'}
        for i in range(self.num_stages):
            blocks = (rf'^layers\.{2 * i}\.blocks\.(\d+)\.', None)
            if coarse:
                matcher[f'stage{i}'] = rf'^layers\.(?:{2 * i - 1}|{2 * i})\.' if i else r'^layers\.0\.'
            else:
                matcher[f'stage{i}'] = [(rf'^layers\.{2 * i - 1}\.', (0,)), blocks] if i else [blocks]
        matcher['head'] = r'^classifier\.'
        return matcher

    def set_grad_checkpointing(self, enable: Union[bool, int, Sequence[int]] = True) -> None:
        """Activation checkpointing of the stages' leading blocks: ``enable`` as ``use_checkpoint``
        (:func:`checkpoint_counts`)."""
        for stage, count in zip(self.stages, checkpoint_counts(enable, [s.depth for s in self.stages])):
            stage.use_checkpoint = count

    def check_input(self, x: Tensor) -> None:
        """Raises ValueError unless ``x`` is a floating ``(B, in_chans, H, W)`` tensor."""
        if not isinstance(x, Tensor):
            raise TypeError(f'A2Mamba expects a torch.Tensor, got {type(x).__name__}')
        if x.dim() != 4:
            raise ValueError(f'A2Mamba expects a 4-D (B, C, H, W) input, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_chans:
            raise ValueError(f'A2Mamba expects {self.in_chans} input channels, got {x.shape[1]} '
                             f'(input shape {tuple(x.shape)})')
        if not torch.is_floating_point(x):
            raise ValueError(f'A2Mamba expects a floating-point input, got {x.dtype}')

    def forward_features(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The four stage maps (strides 4/8/16/32, before any norm), NCHW."""
        return tuple(self.forward_intermediates(x, intermediates_only=True))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits ``(B, num_classes)`` from the last stage map (``pre_logits``: pooled features).

        Raises:
            RuntimeError: the head was pruned (:meth:`prune_intermediate_layers`).
        """
        if isinstance(self.classifier, nn.Identity):
            raise RuntimeError('the classifier head was pruned (prune_intermediate_layers); use forward_intermediates')
        if pre_logits:
            return self.classifier[:4](x).flatten(1)
        return self.classifier(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x)[-1])

    def get_classifier(self) -> nn.Module:
        return self.classifier[4]

    def reset_classifier(self, num_classes: int) -> None:
        if isinstance(self.classifier, nn.Identity):
            raise RuntimeError('the classifier head was pruned (prune_intermediate_layers); build a new model')
        self.num_classes = num_classes
        head = nn.Conv2d(self.head_hidden_size, num_classes, kernel_size=1) if num_classes > 0 else nn.Identity()
        self._init_weights(head)
        self.classifier[4] = head

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        """Parameter-name fragments the authors train without weight decay (besides norms/biases)."""
        return {'rpb', 'A_logs', 'Ds'}


MODEL_SPECS: Dict[str, dict] = {
    'a2mamba_n': dict(embed_dims=(32, 64, 128, 192), depths=(2, 2, 8, 2), num_heads=(2, 2, 4, 8),
                      mlp_ratios=(4, 4, 3, 3)),
    'a2mamba_t': dict(embed_dims=(48, 96, 256, 448), depths=(2, 2, 10, 2), num_heads=(2, 4, 8, 16),
                      mlp_ratios=(4, 4, 3, 3)),
    'a2mamba_s': dict(embed_dims=(64, 128, 320, 512), depths=(2, 4, 12, 4), num_heads=(2, 4, 10, 16),
                      mlp_ratios=(4, 4, 3, 3), layer_scales=(None, None, 'residual', 'residual'),
                      layer_scale_inits=(1, 1, 1, 1)),
    'a2mamba_b': dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(4, 8, 12, 16),
                      mlp_ratios=(4, 4, 3.75, 3.75), layer_scales=('branch',) * 4,
                      layer_scale_inits=(1, 1, 1e-6, 1e-6)),
    'a2mamba_l': dict(embed_dims=(96, 192, 448, 672), depths=(4, 6, 18, 6), num_heads=(4, 8, 16, 24),
                      mlp_ratios=(4, 4, 4, 4), layer_scales=('branch',) * 4,
                      layer_scale_inits=(1, 1, 1e-6, 1e-6)),
}

# One row per size: its model name, its name as the mm backbones' ``arch`` argument, and the
# evaluation crop of its released ImageNet-1k checkpoint. ARCHS and DEFAULT_CFGS are read off it.
_SIZES: List[Tuple[str, str, float]] = [
    ('a2mamba_n', 'nano', 0.9), ('a2mamba_t', 'tiny', 0.9), ('a2mamba_s', 'small', 0.9),
    ('a2mamba_b', 'base', 0.95), ('a2mamba_l', 'large', 0.975),
]

# The sizes by the names of the mm backbones' ``arch`` argument.
ARCHS: Dict[str, str] = {arch: name for name, arch, _ in _SIZES}

# Evaluation metadata of the released ImageNet-1k checkpoints (the authors' _cfg).
DEFAULT_CFGS: Dict[str, dict] = {
    name: dict(input_size=(3, 224, 224), crop_pct=crop_pct, interpolation='bicubic',
               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), num_classes=1000,
               first_conv='patch_embed.0', classifier='classifier.4',
               checkpoint=RELEASED_WEIGHTS[name], license='see the authors\' repository')
    for name, _, crop_pct in _SIZES
}


def list_models() -> List[str]:
    return sorted(MODEL_SPECS)


def compile_in_place(module: nn.Module, torch_compile: Union[bool, dict]) -> None:
    """The fast path's switch: ``True`` or a dict of ``torch.compile`` arguments compiles
    ``module``'s forward in place (``nn.Module.compile``: parameter names unchanged), with static
    shapes unless the dict says otherwise. The ops are custom ops, so the whole network is one
    graph; ``dict(mode='reduce-overhead')`` adds CUDA graphs (measured in docs/BENCHMARKS.md).
    Each new input size compiles again, unless ``dict(dynamic=True)``: then one graph serves every
    input size."""
    if isinstance(torch_compile, bool):
        options = {} if torch_compile else None
    elif isinstance(torch_compile, dict):
        options = dict(torch_compile)
    else:
        raise TypeError(f'torch_compile must be a bool or a dict of torch.compile arguments, got {torch_compile!r}')
    if options is not None:
        module.compile(**dict(dict(dynamic=False), **options))


def create_model(name: str, pretrained: Union[bool, str] = False, torch_compile: Union[bool, dict] = False,
                 **kwargs) -> A2Mamba:
    """Builds ``a2mamba_{n,t,s,b,l}``; ``kwargs`` (``num_classes``, ``drop_path_rate``,
    ``use_checkpoint``, ``in_chans``, ...) override the size's settings.

    ``pretrained=True`` then loads the size's released ImageNet-1k weights
    (``DEFAULT_CFGS[name]['checkpoint']``, downloaded once into torch.hub's cache), a string
    loads that checkpoint path or URL (:func:`~a2mamba_core.load_pretrained`; the released
    weights have a 1000-class classifier). ``torch_compile`` compiles the model in place
    (:func:`compile_in_place`)."""
    if name not in MODEL_SPECS:
        raise ValueError(f'unknown A2Mamba model {name!r}; choose one of {list_models()}')
    model = A2Mamba(**dict(MODEL_SPECS[name], **kwargs))
    model.default_cfg = DEFAULT_CFGS[name]
    if not isinstance(pretrained, (bool, str)):
        raise TypeError(f'pretrained must be a bool or a checkpoint path or URL, got {pretrained!r}')
    if pretrained:
        load_pretrained(model, DEFAULT_CFGS[name]['checkpoint'] if pretrained is True else pretrained)
    compile_in_place(model, torch_compile)
    return model


def _factory(name: str) -> Callable[..., A2Mamba]:
    def build(**kwargs) -> A2Mamba:
        return create_model(name, **kwargs)
    build.__name__ = name
    build.__doc__ = f'A2Mamba {name[-1].upper()} (see :func:`create_model`).'
    return build


a2mamba_n = _factory('a2mamba_n')
a2mamba_t = _factory('a2mamba_t')
a2mamba_s = _factory('a2mamba_s')
a2mamba_b = _factory('a2mamba_b')
a2mamba_l = _factory('a2mamba_l')
