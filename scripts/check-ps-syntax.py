#!/usr/bin/env python3
"""Syntax check of PowerShell scripts where no PowerShell runs (Linux CI).

Parses each file with the tree-sitter PowerShell grammar and reports every syntax
error or missing token with its line. This is the grammar's view, not PowerShell's
own parser: it catches unbalanced braces, quotes and parentheses and malformed
statements, not misspelled cmdlets or parameters. Exit 0 when every file parses.

Needs the PyPI packages tree-sitter and tree-sitter-powershell (.ci/run installs
them into a virtual environment).
"""
import sys

try:
    import tree_sitter
    import tree_sitter_powershell
except ImportError as e:
    sys.exit(f"check-ps-syntax: {e}: pip install tree-sitter tree-sitter-powershell")


def errors(parser, path):
    src = open(path, "rb").read()
    lines = src.splitlines()
    found = []
    stack = [parser.parse(src).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, col = node.start_point
            what = f"missing {node.type}" if node.is_missing else "syntax error"
            text = lines[row].decode(errors="replace").strip() if row < len(lines) else ""
            found.append(f"{path}:{row + 1}:{col + 1}: {what}: {text}")
        stack.extend(reversed(node.children))
    return found


def main(paths):
    if not paths:
        sys.exit("usage: check-ps-syntax.py FILE.ps1...")
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    problems = [p for path in paths for p in errors(parser, path)]
    for p in problems:
        print(p)
    print(f"check-ps-syntax: {len(paths)} file(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
