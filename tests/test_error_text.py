"""The error a user reads starts with what failed: no colour codes, no repeated warnings first."""

from __future__ import annotations

from targets._errors import short_error
from targets._node import harness_failure

TFJS_WARNING = (
    "This model execution did not contain any nodes with control flow or dynamic output shapes. "
    "You can use model.execute() instead."
)
BANNER = (
    "============================\n"
    "Hi, looks like you are running TensorFlow.js in Node.js. To speed things up dramatically, "
    "install our node backend.\n"
    "============================\n"
)


def test_a_converter_error_loses_its_colours_and_repeats_and_puts_warnings_last() -> None:
    message = (
        "\x1b[33mWARNING:\x1b[0m The optimizer was skipped\n"
        "\x1b[31mERROR:\x1b[0m \x1b[1mFusedConv2D only supports rank-1 bias but got rank 4\x1b[0m\n"
        "\x1b[31mERROR:\x1b[0m \x1b[1mFusedConv2D only supports rank-1 bias but got rank 4\x1b[0m\n"
    )
    text = short_error(RuntimeError(message))
    assert text == (
        "RuntimeError: ERROR: FusedConv2D only supports rank-1 bias but got rank 4 | "
        "WARNING: The optimizer was skipped"
    )


def test_a_harness_failure_starts_with_its_own_exception() -> None:
    stderr = BANNER + (TFJS_WARNING + "\n") * 5 + "harness error: FusedConv2D only supports rank-1 bias\n"
    text = harness_failure(stderr)
    assert text.startswith("FusedConv2D only supports rank-1 bias | "), text
    assert text.count("did not contain any nodes") == 1
    assert "Hi, looks like" not in text


def test_a_note_quoting_a_converter_loses_its_colours_too() -> None:
    """torch.onnx colours its step numbers; a report note quoting it (one_line) must not."""
    from shipyard.errors import one_line

    message = "Failed to decompose the FX graph. \x1b[96mThis is step 2/3\x1b[0m of exporting"
    assert one_line(message) == "Failed to decompose the FX graph. This is step 2/3 of exporting"
