"""The README's usage example runs as written, and its test command is the one CI runs."""

import re
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_usage_example_runs(tmp_path, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text()
    example = re.search(r"## Use a pipeline\n\n```python\n(.*?)```", readme, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an untrained network diverges under few-step samplers
        exec(compile(example, "README.md", "exec"), {})
    assert "(4, 5, 64, 64) [0.3 0.3 1.2 1.2]" in capsys.readouterr().out
    assert (tmp_path / "my-pipeline" / "model_index.json").is_file()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = re.search(r"^(python -m pytest)\s", readme, re.MULTILINE).group(1)
    assert re.search(rf"^{re.escape(command)}$", ci, re.MULTILINE)


def test_docs_name_no_machine_paths():
    """Reports copied into docs/ carry the relative paths of their documented commands, not this machine's."""
    machine_path = re.compile(r"(?<![\w.~])/(?:work|root|home|tmp)/")
    offenders = [
        str(path.relative_to(REPO))
        for path in [REPO / "README.md", *(REPO / "docs").rglob("*")]
        if path.suffix in {".md", ".json"} and machine_path.search(path.read_text())
    ]
    assert offenders == []
