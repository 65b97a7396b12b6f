"""Liberty's Boolean ``function`` expressions (``!``, ``'``, ``&``, ``*``, ``|``, ``+``, ``^``, parentheses) compiled to
Python expressions over NumPy Boolean vectors."""

from __future__ import annotations

import re


class NetlistError(ValueError):
    """The netlist uses a cell this simulator cannot evaluate (latch, unknown function)."""


_FUNCTION_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_\[\]]*|[01]|[!'()&|^*+])")


def function_to_python(text: str, variables: dict[str, str]) -> str:
    """A Liberty Boolean ``function`` as a Python expression over NumPy Boolean arrays, pins renamed by
    ``variables``. Precedence: ``!`` and postfix ``'``, then AND (``&``, ``*`` or juxtaposition), then
    ``^``, then OR (``|``, ``+``)."""
    tokens = _FUNCTION_TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise NetlistError(f"cannot read Liberty function {text!r}")
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def primary() -> str:
        token = take()
        if token == "!":
            return f"(~{primary()})"
        if token == "(":
            inner = disjunction()
            if take() != ")":
                raise NetlistError(f"unbalanced parentheses in {text!r}")
            result = f"({inner})"
        elif token in ("0", "1"):
            result = "ZERO" if token == "0" else "ONE"
        elif token in variables:
            result = variables[token]
        else:
            raise NetlistError(f"unknown pin {token!r} in function {text!r}")
        while peek() == "'":
            take()
            result = f"(~{result})"
        return result

    def conjunction() -> str:
        terms = [primary()]
        while peek() in ("&", "*") or (peek() not in (None, "|", "+", "^", ")")):
            if peek() in ("&", "*"):
                take()
            terms.append(primary())
        return " & ".join(terms) if len(terms) > 1 else terms[0]

    def exclusive() -> str:
        terms = [conjunction()]
        while peek() == "^":
            take()
            terms.append(conjunction())
        return " ^ ".join(f"({term})" for term in terms) if len(terms) > 1 else terms[0]

    def disjunction() -> str:
        terms = [exclusive()]
        while peek() in ("|", "+"):
            take()
            terms.append(exclusive())
        return " | ".join(f"({term})" for term in terms) if len(terms) > 1 else terms[0]

    result = disjunction()
    if position != len(tokens):
        raise NetlistError(f"trailing tokens in function {text!r}")
    return result
