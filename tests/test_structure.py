"""Size limits that keep the coordinator, the site logic, the strategies and the clinic tools readable (issue 14):
no file over 400 lines and no function over 80 lines there. The import direction is checked by
``lint-imports`` (pyproject.toml [tool.importlinter]) in the test command."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = [*sorted((REPO / "server").glob("*.py")), REPO / "client" / "task.py", REPO / "client" / "app.py",
           *sorted((REPO / "strategies").glob("*.py")), *sorted((REPO / "protocol").glob("*.py")),
           *sorted((REPO / "clinic").glob("*.py"))]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def test_files_and_functions_stay_small() -> None:
    too_long = []
    for path in CHECKED:
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert len(CHECKED) > 10 and not too_long, too_long
