"""torch.einsum lowered to batched matrix products, with a pinned contraction order.

The operands are contracted left to right: ((op0 · op1) · op2) · ... (torch may pick another path with
opt_einsum; the path changes the sums, so it is pinned here). For each pair, the labels in both operands that
are still needed (by the output or a later operand) are batch dimensions, the labels in both that are not are
contracted: K runs over them in the order they appear in the left operand, row-major; labels of one operand
only are its rows (left) or columns (right). Before the products, a label repeated within one operand takes
the diagonal, and a label that appears in one operand only and not in the output is summed in float (a sum,
no product). Each pairwise product goes through ``product(a, b)`` (a @ b for (B, M, K) and (B, K, N)), so its
operands get their own scales; a pair with no common label is a product with K = 1. The string form
(``"ij,jk->ik"``, with ``...``) and the sublist form are accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _letters(sublist) -> list[str]:
    labels = []
    for item in sublist:
        labels.append("..." if item is Ellipsis else chr(ord("A") + item if item < 26 else ord("a") + item - 26))
    return labels


def parse_arguments(args) -> tuple[str, list[torch.Tensor]]:
    """(equation, operands) of torch.einsum's string form (eq, *ops | [ops]) or sublist form."""
    if isinstance(args[0], str):
        operands = list(args[1][0:] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:])
        return args[0], operands
    operands, terms = list(args[0::2]), list(args[1::2])
    output = None
    if len(operands) > len(terms):
        output = operands.pop()
    if len(operands) != len(terms):  # the last positional is the output sublist
        raise ValueError("einsum: the sublist form needs (operand, sublist) pairs and an optional output sublist")
    equation = ",".join("".join(_letters(term)) for term in terms)
    if output is not None:
        equation += "->" + "".join(_letters(output))
    return equation, operands


def _split_term(term: str, ndim: int, ellipsis: list[str], name: str) -> list[str]:
    labels = list(term.replace("...", "\0"))
    if "\0" in labels:
        count = ndim - (len(labels) - 1)
        at = labels.index("\0")
        labels[at:at + 1] = ellipsis[len(ellipsis) - count:] if count else []
    if len(labels) != ndim or any(not (label.isalpha() or label.startswith("…")) for label in labels):
        raise ValueError(f"einsum: subscripts {term!r} do not fit {name} with {ndim} dimensions")
    return labels


def parse(equation: str, operands: list[torch.Tensor]) -> tuple[list[list[str]], list[str]]:
    """Labels per operand and of the output; an ellipsis becomes labels '…0', '…1', ... (right-aligned)."""
    equation = equation.replace(" ", "")
    left, arrow, right = equation.partition("->")
    terms = left.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: {equation!r} has {len(terms)} operands, {len(operands)} were given")
    widths = [operand.dim() - (len(term) - 3) for term, operand in zip(terms, operands) if "..." in term]
    ellipsis = [f"…{i}" for i in range(max(widths, default=0))]
    labels = [_split_term(term, operand.dim(), ellipsis, f"operand {i}")
              for i, (term, operand) in enumerate(zip(terms, operands))]
    if arrow:
        output = _split_term(right, len(ellipsis) + len(right.replace("...", "")), ellipsis, "the output") if (
            "..." in right) else list(right)
    else:
        counts: dict[str, int] = {}
        for term in labels:
            for label in term:
                counts[label] = counts.get(label, 0) + 1
        output = ellipsis + sorted(label for label, count in counts.items()
                                   if count == 1 and not label.startswith("…"))
    return labels, output


def _reduce_alone(tensor: torch.Tensor, labels: list[str], needed: set[str]) -> tuple[torch.Tensor, list[str]]:
    """Diagonals of repeated labels, then float sums over the labels nothing else needs."""
    labels = list(labels)
    for label in list(dict.fromkeys(labels)):
        while labels.count(label) > 1:
            first = labels.index(label)
            second = labels.index(label, first + 1)
            tensor = tensor.diagonal(dim1=first, dim2=second)
            labels = [lab for i, lab in enumerate(labels) if i not in (first, second)] + [label]
    unused = [i for i, label in enumerate(labels) if label not in needed]
    if unused:
        tensor = tensor.sum(dim=unused)
        labels = [label for i, label in enumerate(labels) if i not in unused]
    return tensor, labels


def _pair(product: Product, a: torch.Tensor, la: list[str], b: torch.Tensor, lb: list[str],
          keep: set[str]) -> tuple[torch.Tensor, list[str]]:
    sizes = {}
    for tensor, labels in ((a, la), (b, lb)):
        for label, size in zip(labels, tensor.shape):
            sizes[label] = max(sizes.get(label, 1), size)
    batch = [label for label in la if label in lb and label in keep]
    contracted = [label for label in la if label in lb and label not in keep]
    rows = [label for label in la if label not in lb]
    columns = [label for label in lb if label not in la]

    def arrange(tensor, labels, order):
        tensor = tensor.permute([labels.index(label) for label in order])
        return tensor.expand(*[sizes[label] for label in order])

    size = lambda group: math.prod(sizes[label] for label in group)  # noqa: E731
    left = arrange(a, la, batch + rows + contracted).reshape(size(batch), size(rows), size(contracted))
    right = arrange(b, lb, batch + contracted + columns).reshape(size(batch), size(contracted), size(columns))
    result = product(left, right)
    return result.reshape([sizes[label] for label in batch + rows + columns]), batch + rows + columns


def einsum(product: Product, equation: str, operands: list[torch.Tensor]) -> torch.Tensor:
    """torch.einsum(equation, *operands) with every pairwise product by ``product``, left to right."""
    labels, output = parse(equation, operands)
    if len(set(output)) != len(output):
        raise ValueError(f"einsum: the output subscripts of {equation!r} repeat a label")

    def needed_after(index: int) -> set[str]:
        return set(output).union(*[set(term) for term in labels[index + 1:]])

    tensor, current = _reduce_alone(operands[0], labels[0], needed_after(0) | set().union(*labels[1:]))
    for index in range(1, len(operands)):
        keep = needed_after(index)
        other, other_labels = _reduce_alone(operands[index], labels[index], keep | set(current))
        tensor, current = _reduce_alone(tensor, current, keep | set(other_labels))
        tensor, current = _pair(product, tensor, current, other, other_labels, keep)
    tensor, current = _reduce_alone(tensor, current, set(output))
    return tensor.permute([current.index(label) for label in output])
