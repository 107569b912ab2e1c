"""core.errors: what a message quotes of an error."""

from __future__ import annotations

import torch

from core.errors import first_line


def test_first_line_gives_the_line_a_colon_announces() -> None:
    """torch's load_state_dict error says which key only on its second line: a plugin that
    let it through was answered "RuntimeError: Error(s) in loading state_dict for Linear:"."""
    try:
        torch.nn.Linear(3, 4).load_state_dict({"weight": torch.zeros(5, 3), "bias": torch.zeros(4)})
    except RuntimeError as exc:
        said = first_line(exc)
    assert said.startswith("Error(s) in loading state_dict for Linear: size mismatch for weight")
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(ValueError("\n  indented:\n")) == "indented:"
    assert first_line(ValueError()) == ""
