"""Small C kernels for the CPU training step: their ctypes calls, autograd Functions and checked entry points.

* ``_csrc/group_pw.c``: ``conv1x1(shuffle(x), weight, groups)`` (:func:`group_pointwise`) and whole runs of such
  convs with the intermediates kept in cache (:func:`pointwise_chain`, used by :mod:`igcnas.nn.chain_ops`);
* ``_csrc/group_conv.c``: the k x k grouped conv with narrow groups, stride s and padding k // 2
  (:func:`group_conv`), which hands depthwise convs with stride 1 and no shuffle to ``_csrc/dw_conv.c``;
* ``_csrc/bn_act.c``: training-mode BatchNorm + ReLU (used by :class:`igcnas.nn.norm.BatchNormAct2d`);
* ``_csrc/codes.c``: the agreements of binary ReLU codes between images (:func:`code_agreements`, NASWOT's kernel
  in :mod:`igcnas.proxies`).

The training kernels run on channels_last float32 CPU tensors, the convs without the activation copy of the
shuffle, forward and both backward products (input and weight gradient). The one library built from the sources is compiled,
cached and loaded by :mod:`igcnas.nn._native_build` (re-exported here: :func:`library`,
:func:`native_available`, :func:`native_status`); where it cannot be built or ``IGCNAS_NATIVE=0`` is set,
:func:`native_available` is False, :func:`native_status` says why, and callers use their torch form instead.
The autograd Functions are once-differentiable: double backward (``create_graph=True``) needs ``impl="naive"``.

Callers (:mod:`igcnas.nn.ops`, :mod:`igcnas.nn.chain_ops`, :mod:`igcnas.nn.norm`) look the functions up on this
module at call time, so patching ``igcnas.nn._native.<name>`` reaches them.
"""


from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from igcnas.nn._native_build import _reset as _reset  # re-exported: tests call ``_native._reset()``
from igcnas.nn._native_build import library, native_available, native_status

if TYPE_CHECKING:
    from igcnas.nn.plan import PwKernel

__all__ = [
    "native_available",
    "native_status",
    "group_pointwise",
    "pointwise_chain",
    "group_conv",
    "shuffle_permutation",
    "supports",
    "supports_conv",
    "code_agreements",
    "chain_forward",
    "chain_backward",
    "conv_forward",
    "conv_backward",
]


def shuffle_permutation(channels: int, shuffle_groups: int) -> list[int]:
    """``perm`` with ``channel_shuffle(x, s)[:, j] == x[:, perm[j]]`` (identity for ``s`` 1 or ``channels``)."""
    if shuffle_groups <= 1 or shuffle_groups >= channels:
        return list(range(channels))
    per = channels // shuffle_groups
    return [(j % shuffle_groups) * per + j // shuffle_groups for j in range(channels)]


def _cpu_float32_4d(x: Tensor, weight: Tensor) -> bool:
    """Whether ``x`` and ``weight`` are both 4-D float32 CPU tensors (what every conv kernel here takes)."""
    return (x.device.type == "cpu" and weight.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() == 4 and weight.dim() == 4)  # per call: no generator


def supports(x: Tensor, weight: Tensor) -> bool:
    """Whether ``x`` / ``weight`` can take the native path (float32 CPU, 4-D, 1x1 weight)."""
    return _cpu_float32_4d(x, weight) and weight.shape[2] == 1 and weight.shape[3] == 1


_shuffle_cache: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}


def _shuffle_tensors(channels: int, shuffle_groups: int) -> tuple[Tensor, Tensor] | None:
    """(perm, slots) of the shuffle as cached int64 tensors: slot j holds channel perm[j]; channel c sits in
    slot slots[c] (the inverse permutation). None for the identity."""
    if shuffle_groups <= 1 or shuffle_groups >= channels:
        return None
    key = (channels, shuffle_groups)
    cached = _shuffle_cache.get(key)
    if cached is None:
        perm = torch.tensor(shuffle_permutation(channels, shuffle_groups), dtype=torch.int64)
        cached = _shuffle_cache[key] = (perm, torch.argsort(perm))
    return cached


def _slot_tensor(channels: int, shuffle_groups: int) -> Tensor | None:
    """Slot of each input channel after the shuffle (the inverse permutation), None = identity."""
    tensors = _shuffle_tensors(channels, shuffle_groups)
    return None if tensors is None else tensors[1]


def data_ptr(t: Tensor | None) -> int | None:
    """Raw data pointer of ``t`` (None for a missing tensor)."""
    return None if t is None else t.data_ptr()


def kernel_grad(grad: Tensor) -> Tensor:
    """An incoming gradient as the kernels read it: channels_last float32 (a copy only where it is not)."""
    dy = grad.contiguous(memory_format=torch.channels_last)
    return dy if dy.dtype == torch.float32 else dy.float()


def check_code(code: int, what: str) -> None:
    """Raise ``MemoryError`` when a kernel reported an allocation failure (-1), ``ValueError`` for arguments it
    refused (-2)."""
    if code == -2:
        raise ValueError(f"igcnas native {what}: the kernel refused its arguments (a bug in the caller)")
    if code != 0:
        raise MemoryError(f"igcnas native {what}: out of memory for the per-thread buffers")


def _pointwise(
    lib: ctypes.CDLL,
    src: Tensor,
    islot: Tensor | None,
    w: Tensor,
    groups: int,
    out_c: int,
    oslot: Tensor | None,
) -> Tensor:
    """``out[p, c'] = sum_i w[g, o, i] * src[p, c]`` (``islot[c] = g*Ig+i``, ``oslot[c'] = g*Og+o``), NHWC."""
    n, c, h, wd = src.shape
    out = torch.empty((n, out_c, h, wd), dtype=src.dtype, memory_format=torch.channels_last)
    code = lib.gpw_forward(
        data_ptr(src), c, data_ptr(islot), data_ptr(out), out_c, data_ptr(oslot), data_ptr(w), groups, n * h * wd,
        torch.get_num_threads(),
    )  # fmt: skip
    check_code(code, "grouped pointwise")
    return out


class _GroupPointwise(torch.autograd.Function):
    """Autograd wrapper of the native grouped 1x1 conv (see :func:`group_pointwise`), by the tiled kernel or, with
    ``direct``, the direct one."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, groups: int, shuffle_groups: int, direct: bool) -> Tensor:
        lib = library()
        assert lib is not None
        x = x.contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(x, weight)
        ctx.groups, ctx.shuffle_groups, ctx.direct = groups, shuffle_groups, direct
        if direct:
            return _direct_forward(lib, x, weight, groups, shuffle_groups)
        w = weight.detach().contiguous()
        return _pointwise(lib, x, _slot_tensor(x.shape[1], shuffle_groups), w.view(weight.shape[0], -1), groups,
                          weight.shape[0], None)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        lib = library()
        assert lib is not None
        x, weight = ctx.saved_tensors
        groups: int = ctx.groups
        dy = kernel_grad(grad)
        out_c, in_g = weight.shape[0], weight.shape[1]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x, memory_format=torch.channels_last) if need_x else None
        grad_w = torch.empty(weight.shape, dtype=torch.float32) if need_w else None
        if need_x or need_w:
            n, c, h, wd = x.shape
            perm, slots = _shuffle_tensors(c, ctx.shuffle_groups) or (None, None)
            if ctx.direct:
                w = weight.detach().contiguous()  # held while the kernel reads it
                code = lib.gpd_backward(
                    data_ptr(x), c, data_ptr(perm), data_ptr(slots), data_ptr(dy), out_c, data_ptr(w),
                    data_ptr(grad_x), data_ptr(grad_w), groups, n * h * wd, torch.get_num_threads(),
                )  # fmt: skip
            else:
                # dx[p, perm(g*Ig+i)] = sum_o W[g*Og+o, i] * dy[p, g*Og+o]: W transposed per group
                wt = weight.detach().reshape(groups, out_c // groups, in_g).transpose(1, 2).contiguous()
                code = lib.gpw_backward(
                    data_ptr(x), c, data_ptr(slots), data_ptr(dy), out_c, data_ptr(wt), data_ptr(grad_x),
                    data_ptr(grad_w), groups, n * h * wd, torch.get_num_threads(),
                )  # fmt: skip
            check_code(code, "backward")
        return grad_x, grad_w, None, None, None


def _direct_forward(lib: ctypes.CDLL, x: Tensor, weight: Tensor, groups: int, shuffle_groups: int) -> Tensor:
    """``conv2d(channel_shuffle(x, shuffle_groups), weight, groups=groups)`` (1x1, channels_last) by the direct
    kernel (``_csrc/group_direct.c``): :func:`_pointwise`'s twin."""
    n, c, h, wd = x.shape
    out = torch.empty((n, weight.shape[0], h, wd), dtype=x.dtype, memory_format=torch.channels_last)
    perm, _ = _shuffle_tensors(c, shuffle_groups) or (None, None)
    w = weight.detach().contiguous()  # held while the kernel reads it
    check_code(lib.gpd_forward(data_ptr(x), c, data_ptr(perm), data_ptr(out), weight.shape[0], data_ptr(w), groups,
                               n * h * wd, torch.get_num_threads()), "grouped pointwise")
    return out


def check_depthwise(what: str, x: Tensor, depthwise: Tensor) -> None:
    """ValueError unless ``depthwise`` is a float32 CPU ``(C, 1, k, k)`` weight for ``x``'s C channels with k in
    1, 3, 5, 7 (the depthwise kernels' sizes)."""
    channels = x.shape[1] if x.dim() == 4 else -1
    if not (_cpu_float32_4d(x, depthwise) and tuple(depthwise.shape[:2]) == (channels, 1)
            and depthwise.shape[2] == depthwise.shape[3] and depthwise.shape[2] in (1, 3, 5, 7)):
        raise ValueError(
            f"{what}: depthwise must be a float32 CPU ({channels}, 1, k, k) weight with k in 1, 3, 5, 7, "
            f"got {depthwise.dtype} {tuple(depthwise.shape)} on {depthwise.device}"
        )


def check_chain(what: str, x: Tensor, weights: Sequence[Tensor], groups: Sequence[int], shuffles: Sequence[int], *,
                name: str = "weight") -> None:
    """ValueError unless every 1x1 ``weights[l]`` (called ``name`` l in the message) is a float32 CPU weight that
    fits the channels reaching it from ``x`` with its groups and shuffle (:func:`check_fit`)."""
    channels = x.shape[1] if x.dim() == 4 else -1
    for index, (weight, g, s) in enumerate(zip(weights, groups, shuffles, strict=True)):
        if not supports(x, weight):
            raise ValueError(
                f"{what}: needs float32 CPU 4-D x and 1x1 weights, got x {x.dtype} {tuple(x.shape)} on "
                f"{x.device}, {name} {index} {weight.dtype} {tuple(weight.shape)}"
            )
        check_fit(f"{what}: {name} {index}", weight, g, s, channels)
        channels = int(weight.shape[0])


def check_fit(what: str, weight: Tensor, groups: int, shuffle_groups: int, channels: int) -> None:
    """ValueError unless ``weight`` with ``groups`` and ``shuffle_groups`` fits ``channels`` input channels."""
    if (
        groups < 1
        or shuffle_groups < 1
        or channels % groups
        or weight.shape[0] % groups
        or weight.shape[1] * groups != channels
        or channels % shuffle_groups
    ):
        raise ValueError(
            f"{what} {tuple(weight.shape)} with groups={groups}, shuffle_groups={shuffle_groups} does not fit "
            f"{channels} input channels"
        )


def group_pointwise(x: Tensor, weight: Tensor, groups: int, shuffle_groups: int = 1, *,
                    kernel: PwKernel = "tiles") -> Tensor:
    """``F.conv2d(channel_shuffle(x, shuffle_groups), weight, groups=groups)`` for a 1x1 ``weight``, natively.

    ``x`` is a float32 CPU ``(N, C, H, W)`` tensor (made channels_last if it is not), ``weight`` has shape
    ``(out, C // groups, 1, 1)``; stride 1, no padding, no bias. The shuffle is folded into the kernel's
    indexing (no activation copy); the output is channels_last. Differentiable in ``x`` and ``weight`` (each
    gradient is computed only when needed). ``kernel``: ``tiles`` (``_csrc/group_pw.c``) or ``direct``
    (``_csrc/group_direct.c``; :class:`~igcnas.nn.plan.ConvPlan`). Requires :func:`native_available`; raises ``RuntimeError``
    otherwise, so check it (or use :func:`igcnas.nn.ops.sparse_conv`, which falls back by itself).

    Example:
        >>> import torch.nn.functional as F
        >>> from igcnas.nn.ops import channel_shuffle
        >>> x = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
        >>> w = torch.randn(16, 2, 1, 1)
        >>> ok = not native_available() or torch.allclose(
        ...     group_pointwise(x, w, 8, 8), F.conv2d(channel_shuffle(x, 8), w, groups=8), atol=1e-5)
        >>> ok
        True
    """
    if not native_available():
        raise RuntimeError(f"igcnas native kernels are {native_status()}")
    if not supports(x, weight):
        raise ValueError(
            f"group_pointwise: needs float32 CPU 4-D x and a 1x1 weight, got x {x.dtype} {tuple(x.shape)} "
            f"on {x.device}, weight {weight.dtype} {tuple(weight.shape)}"
        )
    check_fit("group_pointwise: weight", weight, groups, shuffle_groups, x.shape[1])
    if kernel not in ("tiles", "direct"):
        raise ValueError(f"group_pointwise: kernel={kernel!r} is not 'tiles' or 'direct'")
    out: Tensor = _GroupPointwise.apply(x, weight, groups, shuffle_groups, kernel == "direct")
    return out


def supports_conv(x: Tensor, weight: Tensor, stride: int) -> bool:
    """Whether ``x`` / ``weight`` can take :func:`group_conv` (float32 CPU, 4-D, odd square kernel, stride >= 1)."""
    return _cpu_float32_4d(x, weight) and weight.shape[2] == weight.shape[3] and weight.shape[2] % 2 == 1 and stride >= 1


def _perm_tensor(channels: int, shuffle_groups: int) -> Tensor | None:
    """The shuffle as "slot j holds channel perm[j]", None = identity."""
    tensors = _shuffle_tensors(channels, shuffle_groups)
    return None if tensors is None else tensors[0]


def conv_forward(x: Tensor, weight: Tensor, groups: int, shuffle_groups: int, stride: int, *,
                 affine: Tensor | None = None, relu: bool = False) -> Tensor:
    """The native grouped k x k conv's forward, without autograd (see :func:`group_conv`); with ``affine``
    (scale[C] then shift[C], e.g. :func:`~igcnas.nn.norm.batch_coefficients`) it reads ``x * scale + shift``
    (through a ReLU with ``relu``), computed as each input row is read and never written. ``x`` channels_last
    float32; output channels_last."""
    lib = library()
    assert lib is not None
    w = weight.detach().contiguous()
    perm = _perm_tensor(x.shape[1], shuffle_groups)
    n, c, h, wd = x.shape
    out_c, k = weight.shape[0], weight.shape[2]
    pad = k // 2
    out = torch.empty(
        (n, out_c, (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1),
        dtype=x.dtype,
        memory_format=torch.channels_last,
    )
    code = lib.gc_forward(
        data_ptr(x), data_ptr(perm), data_ptr(w), data_ptr(out), n, h, wd, c, out_c, groups, k, stride,
        data_ptr(affine), int(relu), torch.get_num_threads(),
    )  # fmt: skip
    check_code(code, "grouped conv")
    return out


def conv_backward(
    x: Tensor, dy: Tensor, weight: Tensor, groups: int, shuffle_groups: int, stride: int, *, need_input: bool,
    need_weight: bool, affine: Tensor | None = None, relu: bool = False, bn_sums: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of :func:`conv_forward` for ``dy`` (channels_last float32): that of the input as the conv read
    it (``x``, or with ``affine`` the normalised ``x``) and of the weight, each only where asked. With ``affine``
    (a BatchNorm's :func:`~igcnas.nn.norm.batch_coefficients`) and ``bn_sums`` (float64, 2C), the input gradient's
    pass also fills ``bn_sums`` with the sums that BatchNorm's backward takes from it, while it is in cache."""
    lib = library()
    assert lib is not None
    if bn_sums is not None and (not need_input or affine is None):
        raise ValueError("conv_backward: bn_sums needs need_input and affine")
    n, c, h, wd = x.shape
    grad_x = torch.empty_like(x, memory_format=torch.channels_last) if need_input else None
    grad_w = torch.empty(weight.shape, dtype=torch.float32) if need_weight else None
    if grad_x is None and grad_w is None:
        return None, None
    # keep the contiguous copy referenced during the call (a temporary inside data_ptr(...) would be freed before
    # the kernel reads it when the weight is not contiguous)
    w = weight.detach().contiguous()
    mean = None if bn_sums is None or affine is None else affine.data_ptr() + 8 * c  # coefficients' row 2
    code = lib.gc_backward(
        data_ptr(x), data_ptr(_perm_tensor(c, shuffle_groups)), data_ptr(w), data_ptr(dy), data_ptr(grad_x),
        data_ptr(grad_w), n, h, wd, c, weight.shape[0], groups, weight.shape[2], stride, data_ptr(affine),
        int(relu), mean, data_ptr(bn_sums), torch.get_num_threads(),
    )  # fmt: skip
    check_code(code, "grouped conv backward")
    return grad_x, grad_w


class _GroupConv(torch.autograd.Function):
    """Autograd wrapper of the native grouped k x k conv (see :func:`group_conv`)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, groups: int, shuffle_groups: int, stride: int) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        out = conv_forward(x, weight, groups, shuffle_groups, stride)
        ctx.save_for_backward(x, weight)
        ctx.groups, ctx.shuffle_groups, ctx.stride = groups, shuffle_groups, stride
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        dy = kernel_grad(grad)
        grad_x, grad_w = conv_backward(x, dy, weight, ctx.groups, ctx.shuffle_groups, ctx.stride,
                                       need_input=ctx.needs_input_grad[0], need_weight=ctx.needs_input_grad[1])
        return grad_x, grad_w, None, None, None


def group_conv(x: Tensor, weight: Tensor, groups: int, shuffle_groups: int = 1, stride: int = 1) -> Tensor:
    """``F.conv2d(channel_shuffle(x, shuffle_groups), weight, None, stride, k // 2, 1, groups)``, natively.

    ``weight`` has shape ``(out, C // groups, k, k)`` with odd ``k``; no bias, padding ``k // 2``. Meant for
    narrow groups (a few channels each; the work buffers hold ``C // groups`` copies of an input row). Otherwise
    as :func:`group_pointwise`: float32 CPU ``x`` (made channels_last), the shuffle folded into the indexing,
    channels_last output, differentiable in ``x`` and ``weight``; requires :func:`native_available`.

    Example:
        >>> import torch.nn.functional as F
        >>> from igcnas.nn.ops import channel_shuffle
        >>> x = torch.randn(2, 8, 7, 5).contiguous(memory_format=torch.channels_last)
        >>> w = torch.randn(8, 2, 3, 3)
        >>> ok = not native_available() or torch.allclose(
        ...     group_conv(x, w, 4, 2, 2), F.conv2d(channel_shuffle(x, 2), w, None, 2, 1, 1, 4), atol=1e-5)
        >>> ok
        True
    """
    if not native_available():
        raise RuntimeError(f"igcnas native kernels are {native_status()}")
    if not supports_conv(x, weight, stride):
        raise ValueError(
            f"group_conv: needs float32 CPU 4-D x and an odd square kernel, got x {x.dtype} {tuple(x.shape)} "
            f"on {x.device}, weight {weight.dtype} {tuple(weight.shape)}, stride {stride}"
        )
    check_fit("group_conv: weight", weight, groups, shuffle_groups, x.shape[1])
    out: Tensor = _GroupConv.apply(x, weight, groups, shuffle_groups, stride)
    return out


def _pointer_array(values: list[int | None]) -> ctypes.Array[ctypes.c_void_p]:
    """A C array of pointers (None = NULL) for the chain kernels."""
    return (ctypes.c_void_p * len(values))(*values)


@dataclass(frozen=True)
class _ChainLayout:
    """What the chain kernels take besides the tensors, for one (channels, groups, shuffles): int64 channel counts
    (L + 1) and groups (L), and per layer the inverse shuffle of its input and the shuffle itself (NULL = identity)
    as C pointer arrays (their tensors kept alive here)."""

    chans: Tensor
    groups: Tensor
    tensors: tuple[Tensor | None, ...]
    slots: ctypes.Array[ctypes.c_void_p]
    perms: ctypes.Array[ctypes.c_void_p]


@functools.lru_cache(maxsize=256)
def _chain_layout(chans: tuple[int, ...], groups: tuple[int, ...], shuffles: tuple[int, ...]) -> _ChainLayout:
    """The cached :class:`_ChainLayout` of a chain (built once per signature, not on every call)."""
    slots = [_slot_tensor(chans[index], shuffles[index]) for index in range(len(groups))]
    perms = [_perm_tensor(chans[index], shuffles[index]) for index in range(len(groups))]
    return _ChainLayout(
        torch.tensor(chans, dtype=torch.int64), torch.tensor(groups, dtype=torch.int64), (*slots, *perms),
        _pointer_array([data_ptr(t) for t in slots]), _pointer_array([data_ptr(t) for t in perms]),
    )


class PrefixArgs(ctypes.Structure):
    """What a fused chain reads its input through, as ``_csrc/pw_chain.c``'s ``prefix_args`` (keep the two in step):
    the weight of a prefix conv (NULL: none; a depthwise conv's with ``mg`` 0, else a grouped 3x3 conv's with
    ``mg`` channels per group), the optional BatchNorm scale and shift (``aff``: scale[C] then shift[C], a
    :class:`~igcnas.nn.norm.BatchNormAct2d`'s coefficients) with ``relu``, and the image size."""

    _fields_ = [("w", ctypes.c_void_p), ("aff", ctypes.c_void_p), ("k", ctypes.c_int64), ("height", ctypes.c_int64),
                ("width", ctypes.c_int64), ("relu", ctypes.c_int64), ("mg", ctypes.c_int64)]


def prefix_args(prefix: Tensor | None, x: Tensor, affine: Tensor | None = None, relu: bool = False) -> PrefixArgs | None:
    """The chain kernels' input argument for the ``prefix`` conv (a depthwise ``(C, 1, k, k)`` weight, or a grouped
    3x3 conv's ``(C, M, 3, 3)``, see :func:`rot_prefix_usable`) and/or ``affine`` on ``x`` (None: neither); the
    tensors must outlive the call."""
    if prefix is None and affine is None:
        return None
    k = 0 if prefix is None else int(prefix.shape[2])
    mg = int(prefix.shape[1]) if prefix is not None and grouped_prefix(prefix) else 0
    return PrefixArgs(data_ptr(prefix), data_ptr(affine), k, int(x.shape[2]), int(x.shape[3]), int(relu), mg)


def grouped_prefix(weight: Tensor) -> bool:
    """Whether a prefix conv weight is a grouped 3x3 conv's ``(C, M, 3, 3)`` (M > 1), not a depthwise one."""
    return weight.shape[1] > 1


def rot_prefix_usable(channels: int, weight: Tensor) -> bool:
    """Whether the built kernels run a grouped 3x3 conv of the float32 CPU ``weight`` on ``channels`` channels (stride
    1, no shuffle, groups of M = 2, 4 or 8 channels in and out: ``_csrc/group_rot.c``) as the prefix of a fused
    chain."""
    lib = library()
    if (lib is None or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3) or weight.shape[0] != channels
            or weight.dtype != torch.float32 or weight.device.type != "cpu"):
        return False
    mg = int(weight.shape[1])
    return mg > 1 and channels % mg == 0 and bool(lib.rot_handles(None, channels, channels, channels // mg, 3, 1))


def args_pointer(args: PrefixArgs | None) -> int | None:
    """The C pointer to ``args`` (None: NULL)."""
    return None if args is None else ctypes.addressof(args)


def chain_forward(
    x: Tensor, weights: Sequence[Tensor], groups: tuple[int, ...], shuffles: tuple[int, ...],
    prefix: Tensor | None = None, *, affine: Tensor | None = None, relu: bool = False,
) -> Tensor:
    """The fused kernels' forward, without autograd: the grouped 1x1 convs ``weights`` (none: the depthwise conv
    alone) on ``x``, or on the output of the ``prefix`` conv when given (a depthwise ``(C, 1, k, k)`` or a grouped
    3x3 ``(C, M, 3, 3)`` weight, :func:`rot_prefix_usable`); with ``affine`` (scale[C] then shift[C], e.g.
    :func:`~igcnas.nn.norm.batch_coefficients`) the first conv reads ``x * scale + shift`` (through a ReLU with
    ``relu``). ``x`` channels_last float32; output channels_last."""
    lib = library()
    assert lib is not None
    n, c, h, wd = x.shape
    threads = torch.get_num_threads()
    dw = None if prefix is None else prefix.detach().contiguous()
    if not weights:
        assert dw is not None and not grouped_prefix(dw)
        out = torch.empty_like(x, memory_format=torch.channels_last)
        code = lib.dw_forward(data_ptr(x), data_ptr(dw), data_ptr(out), n, h, wd, c, dw.shape[2], data_ptr(affine),
                              int(relu), threads)
        check_code(code, "depthwise conv")
        return out
    ws = [weight.detach().contiguous() for weight in weights]
    layout = _chain_layout((c, *(int(w.shape[0]) for w in ws)), groups, shuffles)
    out = torch.empty((n, ws[-1].shape[0], h, wd), dtype=x.dtype, memory_format=torch.channels_last)
    args = prefix_args(dw, x, affine, relu)
    code = lib.gpc_forward(
        data_ptr(x), args_pointer(args), data_ptr(out), len(ws), data_ptr(layout.chans), data_ptr(layout.groups),
        layout.slots, _pointer_array([data_ptr(w) for w in ws]), n * h * wd, threads,
    )  # fmt: skip
    check_code(code, "pointwise chain")
    return out


def chain_backward(
    x: Tensor, dy: Tensor, weights: Sequence[Tensor], groups: tuple[int, ...], shuffles: tuple[int, ...],
    prefix: Tensor | None = None, *, need_input: bool, need_prefix: bool = False, need_w: Sequence[bool] = (),
    affine: Tensor | None = None, relu: bool = False, bn_sums: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
    """The gradients of :func:`chain_forward` for the output gradient ``dy`` (channels_last float32): that of the
    input the kernels read (``x``, or with ``affine`` the normalised ``x``), of the prefix conv's weight and of
    each 1x1 weight, each only where asked (None otherwise). With ``affine`` (a BatchNorm's
    :func:`~igcnas.nn.norm.batch_coefficients`) and ``bn_sums`` (float64, 2C), the kernel that writes the input
    gradient (the prefix conv's backward, else the chain's) also fills ``bn_sums`` with the sums that BatchNorm's
    backward takes from it, while it is in cache."""
    lib = library()
    assert lib is not None
    n, c, h, wd = x.shape
    if bn_sums is not None and (not need_input or affine is None or (prefix is None and not weights)):
        raise ValueError("chain_backward: bn_sums needs need_input, affine and a conv to take them (prefix or 1x1)")
    mean = None if bn_sums is None or affine is None else affine.data_ptr() + 8 * c  # coefficients' row 2
    threads = torch.get_num_threads()
    dw = None if prefix is None else prefix.detach().contiguous()
    grad_ws: list[Tensor | None] = [torch.empty(w.shape, dtype=torch.float32) if needed else None
                                    for w, needed in zip(weights, need_w, strict=True)]
    grad_in: Tensor | None = dy
    if weights:
        # the gradient of the chain's input: x's own, or (with a prefix) that of the prefix conv's output
        grad_in = torch.empty_like(x, memory_format=torch.channels_last) if need_input or need_prefix else None
        ws = [weight.detach().contiguous() for weight in weights]
        wts = [w.reshape(g, w.shape[0] // g, w.shape[1]).transpose(1, 2).contiguous()
               for w, g in zip(ws, groups, strict=True)]
        layout = _chain_layout((c, *(int(w.shape[0]) for w in ws)), groups, shuffles)
        args = prefix_args(dw, x, affine, relu)
        chain_sums = bn_sums if dw is None else None  # with a prefix conv, its backward takes them
        code = lib.gpc_backward(
            data_ptr(x), args_pointer(args), data_ptr(dy), data_ptr(grad_in), len(ws), data_ptr(layout.chans),
            data_ptr(layout.groups), layout.slots, layout.perms, _pointer_array([data_ptr(w) for w in ws]),
            _pointer_array([data_ptr(w) for w in wts]), _pointer_array([data_ptr(g) for g in grad_ws]), n * h * wd,
            None if chain_sums is None else mean, data_ptr(chain_sums), threads,
        )  # fmt: skip
        check_code(code, "pointwise chain backward")
    if dw is None or grad_in is None:
        return grad_in, None, grad_ws
    if grouped_prefix(dw):
        grad_x, grad_gc = conv_backward(x, grad_in, dw, c // dw.shape[1], 1, 1, need_input=need_input,
                                        need_weight=need_prefix, affine=affine, relu=relu, bn_sums=bn_sums)
        return grad_x, grad_gc, grad_ws
    grad_x = torch.empty_like(x, memory_format=torch.channels_last) if need_input else None
    grad_dw = torch.empty(dw.shape, dtype=torch.float32) if need_prefix else None
    if grad_x is not None or grad_dw is not None:
        code = lib.dw_backward(data_ptr(x), data_ptr(dw), data_ptr(grad_in), data_ptr(grad_x), data_ptr(grad_dw), n,
                               h, wd, c, dw.shape[2], data_ptr(affine), int(relu), mean, data_ptr(bn_sums), threads)
        check_code(code, "depthwise conv backward")
    return grad_x, grad_dw, grad_ws


class _PointwiseChain(torch.autograd.Function):
    """Autograd wrapper of the fused chain of grouped 1x1 convs, optionally behind a prefix conv (see
    :func:`pointwise_chain`; its ``depthwise`` argument may also be a grouped 3x3 conv's weight that
    :func:`rot_prefix_usable` accepts)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, groups: tuple[int, ...], shuffles: tuple[int, ...], depthwise: Tensor | None,
        *weights: Tensor,
    ) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        out = chain_forward(x, weights, groups, shuffles, depthwise)
        ctx.save_for_backward(x, depthwise, *weights)
        ctx.groups = groups
        ctx.shuffles = shuffles
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, depthwise, *weights = ctx.saved_tensors
        need_x, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        need_w = ctx.needs_input_grad[4:]
        if not need_x and not need_dw and not any(need_w):
            return (None, None, None, None, *([None] * len(weights)))
        dy = kernel_grad(grad)
        grad_x, grad_dw, grad_ws = chain_backward(x, dy, weights, ctx.groups, ctx.shuffles, depthwise,
                                                  need_input=need_x, need_prefix=need_dw, need_w=need_w)
        return (grad_x, None, None, grad_dw, *grad_ws)


def pointwise_chain(
    x: Tensor, weights: list[Tensor] | tuple[Tensor, ...], groups: list[int] | tuple[int, ...],
    shuffle_groups: list[int] | tuple[int, ...], *, depthwise: Tensor | None = None,
) -> Tensor:
    """Consecutive grouped 1x1 convs ``conv_l(channel_shuffle(., shuffle_groups[l]), weights[l], groups[l])``, fused,
    optionally behind a depthwise conv.

    One native op computes the whole chain per tile of pixels (16 with AVX-512, else 8) with the intermediates in
    cache: the forward reads ``x`` once and writes the output once; the backward saves only ``x`` (and the
    weights), recomputes the intermediates per tile and writes only the input gradient (plus the weight gradients,
    summed deterministically per thread). ``x``: float32 CPU ``(N, C, H, W)`` (made channels_last); every weight ``(out_l, in_l // groups_l,
    1, 1)`` with ``in_{l+1} = out_l``; stride 1, no bias; output channels_last. With ``depthwise`` (a ``(C, 1, k,
    k)`` weight, odd ``k <= 7``) the chain runs on ``F.conv2d(x, depthwise, padding=k // 2, groups=C)``, which is
    computed per tile too and never written (the backward recomputes it). Differentiable in ``x``, ``depthwise``
    and each weight. Requires :func:`native_available` (``RuntimeError`` otherwise).

    Example:
        >>> import torch.nn.functional as F
        >>> from igcnas.nn.ops import channel_shuffle
        >>> x = torch.randn(2, 16, 5, 5)
        >>> w1, w2, d = torch.randn(16, 2, 1, 1), torch.randn(16, 4, 1, 1), torch.randn(16, 1, 3, 3)
        >>> ref = F.conv2d(channel_shuffle(F.conv2d(channel_shuffle(x, 8), w1, groups=8), 4), w2, groups=4)
        >>> ok = not native_available() or torch.allclose(
        ...     pointwise_chain(x, [w1, w2], [8, 4], [8, 4]), ref, atol=1e-4)
        >>> ok
        True
        >>> ref = F.conv2d(F.conv2d(F.conv2d(x, d, padding=1, groups=16), w1, groups=8), w2, groups=4)
        >>> ok = not native_available() or torch.allclose(
        ...     pointwise_chain(x, [w1, w2], [8, 4], [1, 1], depthwise=d), ref, atol=1e-4)
        >>> ok
        True
    """
    if not native_available():
        raise RuntimeError(f"igcnas native kernels are {native_status()}")
    weights, groups, shuffles = tuple(weights), tuple(int(g) for g in groups), tuple(int(s) for s in shuffle_groups)
    if not weights or len(groups) != len(weights) or len(shuffles) != len(weights):
        raise ValueError(
            f"pointwise_chain: give one groups and one shuffle_groups entry per weight, got {len(weights)} weights, "
            f"{len(groups)} groups, {len(shuffles)} shuffle_groups"
        )
    if depthwise is not None:
        check_depthwise("pointwise_chain", x, depthwise)
    check_chain("pointwise_chain", x, weights, groups, shuffles)
    out: Tensor = _PointwiseChain.apply(x, groups, shuffles, depthwise, *weights)
    return out


def code_agreements(output: Tensor, total: Tensor) -> None:
    """``total[i, j] +=`` the units of ``output`` where images i and j are both active (> 0) or both inactive.

    ``output`` is a float32 CPU tensor whose first dimension is the batch (any layout: each image's units are
    counted in memory order, which does not change the counts); ``total`` is an (N, N) float64 CPU tensor. The
    counts are exact (bits packed 64 to a word, pairs compared by XOR and popcount): NASWOT's Hamming kernel
    without the float matmul of the 0/1 codes. Requires :func:`native_available` (``RuntimeError`` otherwise).

    Example:
        >>> out = torch.tensor([[1.0, -1.0, 2.0], [3.0, 0.0, -1.0]])
        >>> total = torch.zeros(2, 2, dtype=torch.float64)
        >>> ok = not native_available() or (code_agreements(out, total), total.tolist())[1] == [[3, 2], [2, 3]]
        >>> ok
        True
    """
    if not native_available():
        raise RuntimeError(f"code_agreements: the native kernels are not available ({native_status()})")
    n = output.shape[0]
    if output.dtype != torch.float32 or output.device.type != "cpu" or n < 1:
        raise ValueError(f"code_agreements: output must be a float32 CPU batch, got {output.dtype} {output.device}")
    if total.shape != (n, n) or total.dtype != torch.float64 or not total.is_contiguous():
        raise ValueError(f"code_agreements: total must be a contiguous ({n}, {n}) float64 tensor")
    rows = output.detach()
    if not (rows.is_contiguous() or (rows.dim() == 4 and rows.is_contiguous(memory_format=torch.channels_last))):
        rows = rows.contiguous()  # every image's units must be one contiguous row of memory
    lib = library()
    assert lib is not None
    code = lib.codes_agreements(data_ptr(rows), n, rows.numel() // n, data_ptr(total), torch.get_num_threads())
    check_code(code, "code agreements")
