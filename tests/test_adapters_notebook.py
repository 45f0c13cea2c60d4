"""The quick-start notebook runs top to bottom (nbclient, a kernel on this venv's python) and
the display helpers render results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agentkit import RunResult, ToolResult, Usage
from agentkit.adapters.notebook import show, tool_steps

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"

MESSAGES = [
    {"role": "user", "content": [{"type": "text", "text": "add"}]},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 1, "b": 2}},
            {"type": "tool_use", "id": "t2", "name": "add", "input": {"a": "x"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "3"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "bad <a>", "is_error": True},
        ],
    },
    {"role": "assistant", "content": [{"type": "text", "text": "It is 3."}]},
]


def test_run_results_render_answer_tool_calls_and_usage() -> None:
    run = RunResult(
        text="It is <3>.",
        messages=MESSAGES,
        turns=2,
        stop_reason="end_turn",
        usage=Usage(input_tokens=10, output_tokens=4, cache_read_input_tokens=90),
    )
    steps = tool_steps(MESSAGES)
    assert [(s.name, s.output, s.is_error) for s in steps] == [
        ("add", "3", False),
        ("add", "bad <a>", True),
    ]
    view = show(run)
    assert "It is &lt;3&gt;." in view._repr_html_()  # escaped
    assert "bad &lt;a&gt;" in view._repr_html_()
    markdown = view._repr_markdown_()
    assert "| `add` |" in markdown
    assert "⚠️ bad <a>" in markdown
    assert "100 input / 4 output tokens" in markdown
    assert "90 cached" in markdown


def test_tool_results_render_content_error_state_and_data() -> None:
    ok = show(ToolResult("two workspaces", data={"names": ["a", "b"]}))
    assert "Tool result" in ok._repr_markdown_()
    assert "&quot;names&quot;" in ok._repr_html_()
    failed = show(ToolResult.error("no such workspace"))
    assert "Tool error" in failed._repr_html_()


@pytest.mark.slow
def test_quickstart_notebook_runs_top_to_bottom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbclient
    import nbformat

    # a kernel spec for exactly this interpreter, whatever else is installed on the machine
    spec_dir = tmp_path / "kernels" / "agentkit-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "agentkit test",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="agentkit-test",
        timeout=120,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "2 + 40 = **42**." in html  # show(result) of the first run
    assert "<code>add</code>" in html
    assert "api-server" in html  # the live view, replaced by the result at the end
    assert "Tool error" in html
