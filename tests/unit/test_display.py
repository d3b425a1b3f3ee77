"""What the notebook shows: summaries cut at a word, code in a monospace block."""

from __future__ import annotations

import pytest
from opsbook import secrets
from opsbook.notebook import display


@pytest.mark.parametrize("text,limit,want", [
    ("short enough", 20, "short enough"),
    ("the quick brown fox jumps over the lazy dog", 20, "the quick brown fox…"),
    ("the quick brown fox jumps over the lazy dog", 18, "the quick brown…"),
    ("one, two, three, four", 12, "one, two…"),  # no dangling comma before the mark
    ("a-single-very-long-identifier-without-spaces", 12, "a-single-ve…"),  # one word: cut inside it
    ("lines\nand   spaces\tfolded", 40, "lines and spaces folded"),
    (None, 5, ""),
])
def test_shorten_cuts_at_a_word(text, limit, want):
    got = display.shorten(text, limit)
    assert got == want and len(got) <= limit


def test_code_is_a_monospace_pre_that_redaction_still_finds():
    text = 'password: "s3cr<e>t & more"\nkey: value\n'
    block = display.code_html(text)
    assert block.startswith("<pre class='opsbook-code' data-lang='yaml' style=\"font-family:")
    assert "monospace" in block and "white-space:pre" in block
    assert "&lt;" in block and "<e>" not in block  # escaped, not markup
    # escaped only (never split into highlighting spans): every secret it holds is redacted
    red = secrets.Redactor(['s3cr<e>t & more'])
    assert 's3cr' not in red.redact(block)


def test_show_code_outside_ipython_prints_the_text(capsys):
    display.show_code("a: 1\n")
    assert capsys.readouterr().out == "a: 1\n\n"


def test_show_code_in_ipython_is_html_pre_and_plain_text():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    try:
        with capture_output() as cap:
            display.show_code("kind: Service\n")
        (out,) = cap.outputs
        assert out.data["text/plain"] == "kind: Service\n"  # not "<IPython.core.display.Markdown object>"
        assert out.data["text/html"].startswith("<pre class='opsbook-code'") and "text/markdown" not in out.data
    finally:
        InteractiveShell.clear_instance()
