"""core.errors: what a message quotes of an error."""

from __future__ import annotations

import torch

from core.errors import UnknownName, first_line, shown


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


def test_a_long_value_is_shown_cut_with_its_length() -> None:
    """A 900 KB supernet name was echoed whole in the 422, twice (fuzz probe, session 22)."""
    assert shown("fmnist") == "'fmnist'"
    cut = shown("a" * 900_000)
    assert len(cut) < 130 and cut.endswith("... (900000 characters)") and cut.startswith("'aaa")
    message = str(UnknownName("supernet", "b" * 5000, ["fmnist-ofa-cnn"]))
    assert len(message) < 200 and message.endswith("known: fmnist-ofa-cnn")
