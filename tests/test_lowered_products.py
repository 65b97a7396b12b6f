"""The products lbaify reaches by intercepting torch functions beyond matmul: F.conv1d/2d/3d and
conv_transpose1d/2d/3d (called directly and through nn.Conv3d, nn.ConvTranspose*), nn.Bilinear, torch.einsum,
addbmm, tensordot, and the matmul spellings (mv, dot, inner, addmv, linalg.matmul, multi_dot). Each is compared
bit for bit with lba_train.reference_dot over the products listed from the definition (docs/operations.md), on
small shapes and sampled outputs."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lba_core import FloatFormat, MacConfig
from lba_train import lbaify, reference_dot
from lba_train.products import products_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = MacConfig("e4m3", FloatFormat(5, 4, bias=-2), chunk_size=4)
SAMPLES = 10


class _Call(nn.Module):
    """forward(*inputs) = fn(self, *inputs): a model whose products are the torch function under test."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, *inputs):
        return self.fn(self, *inputs)


def _convert(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no layer was converted": these models have no Linear/Conv2d
        return lbaify(model.double(), CFG)


def _wide(model: nn.Module) -> nn.Module:
    """The same products with fp16 operands and an fp32 accumulator: close to the float result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lbaify(model, MacConfig("fp16", "fp32"))


def _scaled(value: float, scale: torch.Tensor) -> torch.Tensor:
    return (torch.tensor(value, dtype=torch.float64) * scale).to(torch.float64)


def _samples(shape, generator, count=SAMPLES):
    return [tuple(int(torch.randint(n, (1,), generator=generator)) for n in shape) for _ in range(count)]


# ------------------------------------------------------------------------------------------------ convolutions
def _conv_terms(qx, qw, batch, out, position, stride, before, dilation, groups):
    group_out, group_in = qw.shape[0] // groups, qw.shape[1]
    group = out // group_out
    a, b = [], []
    for channel in range(group_in):
        for k in itertools.product(*[range(n) for n in qw.shape[2:]]):
            index = [p * s - pb + kk * d for p, s, pb, kk, d in zip(position, stride, before, k, dilation)]
            inside = all(0 <= i < n for i, n in zip(index, qx.shape[2:]))
            a.append(float(qx[(batch, group * group_in + channel, *index)]) if inside else 0.0)
            b.append(float(qw[(out, channel, *k)]))
    return a, b


def _conv_transpose_terms(qx, qw, batch, out, position, stride, padding, dilation, groups):
    group_in, group_out = qx.shape[1] // groups, qw.shape[1]
    group, local = divmod(out, group_out)
    a, b = [], []
    for channel in range(group_in):
        for j in itertools.product(*[range(n) for n in qw.shape[2:]]):
            k = [n - 1 - jj for n, jj in zip(qw.shape[2:], j)]  # the flipped kernel: its last element first
            moved = [p + pp - kk * d for p, pp, kk, d in zip(position, padding, k, dilation)]
            inside = all(m % s == 0 and 0 <= m // s < n for m, s, n in zip(moved, stride, qx.shape[2:]))
            source = [m // s for m, s in zip(moved, stride)]
            a.append(float(qx[(batch, group * group_in + channel, *source)]) if inside else 0.0)
            b.append(float(qw[(group * group_in + channel, local, *k)]))
    return a, b


CONVOLUTIONS = [
    ("nn.Conv3d", nn.Conv3d(4, 6, (3, 2, 3), stride=(2, 1, 1), padding=1, dilation=(1, 2, 1), groups=2),
     (2, 4, 5, 5, 4), False),
    ("F.conv1d same", nn.Conv1d(3, 4, 4, padding="same", dilation=2), (2, 3, 9), False),
    ("F.conv2d", nn.Conv2d(2, 4, 3, stride=2, padding=(0, 1), groups=2), (1, 2, 6, 5), False),
    ("F.conv2d same, even kernel", nn.Conv2d(2, 3, (2, 3), padding="same"), (1, 2, 4, 5), False),
    ("nn.ConvTranspose1d", nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2),
     (2, 4, 5), True),
    ("nn.ConvTranspose2d", nn.ConvTranspose2d(2, 3, (3, 2), stride=(2, 3), padding=(2, 0)), (2, 2, 3, 4), True),
    ("nn.ConvTranspose3d", nn.ConvTranspose3d(2, 2, 2, stride=2, bias=False), (1, 2, 2, 3, 2), True),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own float convolution
@pytest.mark.parametrize(("label", "module", "shape", "transposed"), CONVOLUTIONS, ids=[c[0] for c in CONVOLUTIONS])
def test_convolutions_equal_the_reference(label, module, shape, transposed, comparisons):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    if label.startswith("F."):  # the function called directly, with the module's parameters
        function = getattr(F, type(module).__name__.lower())

        def call(self, x):
            return function(x, self.conv.weight, self.conv.bias, self.conv.stride, self.conv.padding,
                            self.conv.dilation, self.conv.groups)

        model = _Call(call, conv=module)
    else:
        model = _Call(lambda self, x: self.conv(x), conv=module)
    converted = _convert(model)
    conv = converted.conv
    x = torch.randn(shape, dtype=torch.float64, generator=generator)
    y = converted(x).detach()
    products = products_of(converted)
    qx, x_scale = products.input_quantizer(x)
    qw, w_scale = products.weight_quantizer(conv.weight.detach())
    with torch.no_grad():
        float_y = module.double()(x)
    assert y.shape == float_y.shape
    mismatches = 0
    for batch, out, *position in _samples(y.shape, generator):
        if transposed:
            a, b = _conv_transpose_terms(qx, qw, batch, out, position, conv.stride, conv.padding, conv.dilation,
                                         conv.groups)
        else:
            padding = conv.padding
            if padding == "same":
                padding = [d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation)]
            a, b = _conv_terms(qx, qw, batch, out, position, conv.stride, padding, conv.dilation, conv.groups)
        expected = _scaled(reference_dot(a, b, CFG), x_scale * w_scale)
        if conv.bias is not None:
            expected = expected + conv.bias[out]
        mismatches += int(not torch.equal(y[(batch, out, *position)], expected))
    comparisons(f"{label} vs reference_dot", SAMPLES, mismatches)
    assert mismatches == 0


# ------------------------------------------------------------------------------------------------ other products
def test_bilinear_two_sums_equal_the_reference(comparisons):
    torch.manual_seed(2)
    generator = torch.Generator().manual_seed(3)
    model = _Call(lambda self, x1, x2: self.bilinear(x1, x2), bilinear=nn.Bilinear(3, 4, 2))
    converted = _convert(model)
    x1 = torch.randn(3, 3, dtype=torch.float64, generator=generator)
    x2 = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    y = converted(x1, x2).detach()
    products, weight = products_of(converted), converted.bilinear.weight.detach()
    q1, s1 = products.input_quantizer(x1)
    qw, sw = products.weight_quantizer(weight.permute(1, 0, 2).reshape(3, 8))
    partial = torch.stack([torch.stack([_scaled(reference_dot(q1[n], qw[:, c], CFG), s1 * sw) for c in range(8)])
                           for n in range(3)])
    qp, sp = products.input_quantizer(partial.reshape(3, 2, 4))
    q2, s2 = products.weight_quantizer(x2.reshape(3, 4, 1))
    expected = torch.stack([torch.stack([_scaled(reference_dot(qp[n, o], q2[n, :, 0], CFG), sp * s2)
                                         for o in range(2)]) for n in range(3)]) + converted.bilinear.bias.detach()
    mismatches = int((y != expected).sum())
    comparisons("nn.Bilinear vs reference_dot", y.numel(), mismatches)
    assert mismatches == 0
    torch.testing.assert_close(y, F.bilinear(x1, x2, weight, converted.bilinear.bias.detach()), rtol=0.3, atol=0.3)


def test_einsum_contracts_left_to_right_on_the_accumulator(comparisons):
    generator = torch.Generator().manual_seed(4)
    a, b, c = (torch.randn(*shape, dtype=torch.float64, generator=generator) for shape in ((2, 3, 4), (4, 5), (5, 2)))
    converted = _convert(_Call(lambda self, a, b, c: torch.einsum("bij,jk,kl->bil", a, b, c)))
    y = converted(a, b, c)
    products = products_of(converted)
    qa, sa = products.input_quantizer(a)
    qb, sb = products.weight_quantizer(b)
    first = torch.tensor([[[reference_dot(qa[n, i], qb[:, k], CFG) for k in range(5)] for i in range(3)]
                          for n in range(2)], dtype=torch.float64) * (sa * sb)
    qf, sf = products.input_quantizer(first)
    qc, sc = products.weight_quantizer(c)
    expected = torch.tensor([[[reference_dot(qf[n, i], qc[:, m], CFG) for m in range(2)] for i in range(3)]
                             for n in range(2)], dtype=torch.float64) * (sf * sc)
    mismatches = int((y != expected).sum())
    comparisons("einsum bij,jk,kl->bil vs reference_dot", y.numel(), mismatches)
    assert mismatches == 0
    for equation, operands in (("bij,bkj->bik", (a, a)), ("...j,jk", (a, b)), ("ii,ij->j", (b[:4, :4], b)),
                               ("bij,bij->b", (a, a)), ("ij,kl->ijkl", (b, c))):
        wide = _wide(_Call(lambda self, *ops, eq=equation: torch.einsum(eq, *ops)))
        torch.testing.assert_close(wide(*operands), torch.einsum(equation, *operands), rtol=2e-3, atol=2e-3)
    sublist = torch.einsum(a, [0, 1, 2], b, [2, 3], [0, 1, 3])
    wide = _wide(_Call(lambda self, a, b: torch.einsum(a, [0, 1, 2], b, [2, 3], [0, 1, 3])))
    torch.testing.assert_close(wide(a, b), sublist, rtol=2e-3, atol=2e-3)


def test_addbmm_and_tensordot_equal_the_reference(comparisons):
    generator = torch.Generator().manual_seed(5)
    base = torch.randn(3, 2, dtype=torch.float64, generator=generator)
    b1 = torch.randn(4, 3, 5, dtype=torch.float64, generator=generator)
    b2 = torch.randn(4, 5, 2, dtype=torch.float64, generator=generator)
    converted = _convert(_Call(lambda self, i, x, w: torch.addbmm(i, x, w, beta=0.5, alpha=2.0)))
    y = converted(base, b1, b2)
    products = products_of(converted)
    q1, s1 = products.input_quantizer(b1)
    q2, s2 = products.weight_quantizer(b2)
    mismatches = 0
    for row, column in itertools.product(range(3), range(2)):  # K = batch x 5, batch slowest
        value = reference_dot(q1[:, row, :].reshape(-1), q2[:, :, column].reshape(-1), CFG)
        expected = 2.0 * _scaled(value, s1 * s2) + 0.5 * base[row, column]
        mismatches += int(not torch.equal(y[row, column], expected))
    t = torch.randn(3, 4, 2, dtype=torch.float64, generator=generator)
    a = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator)
    converted = _convert(_Call(lambda self, a, t: torch.tensordot(a, t, ([1, 2], [0, 1]))))
    y2 = converted(a, t)
    products = products_of(converted)
    qa, sa = products.input_quantizer(a)
    qt, st = products.weight_quantizer(t)
    for row, column in itertools.product(range(2), range(2)):
        expected = _scaled(reference_dot(qa[row].reshape(-1), qt[:, :, column].reshape(-1), CFG), sa * st)
        mismatches += int(not torch.equal(y2[row, column], expected))
    comparisons("addbmm and tensordot vs reference_dot", 6 + 4, mismatches)
    assert mismatches == 0


def test_matmul_spellings_are_the_intercepted_matmul():
    """mv, dot, vdot, inner, addmv, linalg.matmul, Tensor.__rmatmul__ and multi_dot (pinned left to right) give
    exactly what the intercepted torch.matmul gives."""
    generator = torch.Generator().manual_seed(6)
    m, v, w = (torch.randn(*shape, dtype=torch.float64, generator=generator) for shape in ((3, 4), (4,), (4,)))
    c = torch.randn(4, 2, dtype=torch.float64, generator=generator)
    pairs = [
        (lambda s, m, v, w, c: torch.mv(m, v), lambda s, m, v, w, c: torch.matmul(m, v)),
        (lambda s, m, v, w, c: v.dot(w) + torch.vdot(v, w), lambda s, m, v, w, c: 2 * torch.matmul(v, w)),
        (lambda s, m, v, w, c: torch.inner(m, m), lambda s, m, v, w, c: torch.matmul(m, m.t())),
        (lambda s, m, v, w, c: torch.addmv(m[:, 0], m, v, beta=2.0),
         lambda s, m, v, w, c: torch.matmul(m, v) + 2.0 * m[:, 0]),
        (lambda s, m, v, w, c: torch.linalg.matmul(m, c), lambda s, m, v, w, c: m @ c),
        (lambda s, m, v, w, c: torch.linalg.multi_dot([m.t(), m, c]), lambda s, m, v, w, c: (m.t() @ m) @ c),
    ]
    for spelled, plain in pairs:
        got = _convert(_Call(spelled))(m, v, w, c)
        torch.testing.assert_close(got, _convert(_Call(plain))(m, v, w, c), rtol=0, atol=0)
        assert not torch.equal(got, plain(None, m, v, w, c)), "the product ran on the accumulator, not in float"
