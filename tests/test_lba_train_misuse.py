"""lba_train's public functions given what a new user might give them: one clear error naming the argument,
before any work (issue 27, misuse case 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lba_core import MacConfig
from lba_train import evaluate, finetune, lba_bmm, lba_matmul

CFG = MacConfig("e4m3", "e5m10")


def test_evaluate_and_finetune_name_the_bad_loader():
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"^evaluate: loader must be a DataLoader .* got NoneType$"):
        evaluate(model, None)
    with pytest.raises(TypeError, match=r"^evaluate: loader must yield \(inputs, labels\) pairs of tensors, got a "
                                        r"batch of type int$"):
        evaluate(model, [1, 2, 3])
    with pytest.raises(TypeError, match=r"^evaluate: model must be an nn.Module, got str$"):
        evaluate("model", [(torch.zeros(1, 3), torch.zeros(1))])
    with pytest.raises(TypeError, match=r"^finetune: train_loader must be a DataLoader .* got NoneType$"):
        finetune(model, None, None, CFG)
    with pytest.raises(TypeError, match=r"^finetune: val_loader must be a DataLoader .* got Tensor$"):
        finetune(model, [(torch.zeros(1, 3), torch.zeros(1))], torch.zeros(3), CFG)
    assert evaluate(nn.Identity(), [(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))]) == 1.0


def test_lba_matmul_rejects_non_finite_and_non_float_operands():
    w = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"^lba_matmul: x contains \+-inf"):
        lba_matmul(torch.tensor([[float("inf"), 1.0, 2.0]]), w, CFG)
    with pytest.raises(ValueError, match=r"^lba_matmul: w contains \+-inf"):
        lba_matmul(torch.ones(1, 3), torch.full((3, 2), float("-inf")), CFG)
    with pytest.raises(ValueError, match=r"^lba_matmul: x has dtype torch.int64; pass a floating-point tensor"):
        lba_matmul(torch.ones(1, 3, dtype=torch.int64), w, CFG)
    with pytest.raises(ValueError, match=r"^lba_bmm: b has dtype torch.bool"):
        lba_bmm(torch.ones(1, 1, 3), torch.ones(1, 3, 2, dtype=torch.bool), CFG)


def test_lba_matmul_documented_rules_for_finite_values_and_float64():
    """Finite values beyond the input format's largest saturate to it; float64 operands are rounded into the
    format exactly as float32 ones."""
    w = torch.ones(3, 1)
    largest = float(CFG.a_format.max_value)
    assert torch.equal(lba_matmul(torch.tensor([[1e30, 1.0, 2.0]]), w, CFG),
                       lba_matmul(torch.tensor([[largest, 1.0, 2.0]]), w, CFG))
    assert not torch.equal(lba_matmul(torch.tensor([[largest / 2, 1.0, 2.0]]), w, CFG),
                           lba_matmul(torch.tensor([[largest, 1.0, 2.0]]), w, CFG))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lba_matmul(x.double(), w.double(), CFG), lba_matmul(x, w, CFG))


def test_lba_matmul_takes_the_kernel_the_readme_spells():
    x, w = torch.randn(2, 4), torch.randn(4, 3)
    assert torch.equal(lba_matmul(x, w, CFG, kernel="torch"), lba_matmul(x, w, CFG))
    with pytest.raises(ValueError, match=r"^lba_matmul: unknown GEMM kernel 'cuda'; choose auto or one of"):
        lba_matmul(x, w, CFG, kernel="cuda")
    try:  # Triton on CPU needs its interpreter: a result, or one line that says how to get one
        y = lba_matmul(x, w, CFG, kernel="triton")
    except ValueError as error:
        assert "triton" in str(error) and "TRITON_INTERPRET=1" in str(error)
    else:
        assert torch.equal(y, lba_matmul(x, w, CFG))
