"""English sentences from the Python standard library's docstrings, one per line: a text file to search a
sentence embedder on, made offline (nothing is downloaded).

    python examples/sentences.py runs/sentences.txt            # 3,000 sentences
    autoprune search --model hf:DIR --data runs/sentences.txt --budget-ratio 0.8
"""

from __future__ import annotations

import argparse
import ast
import random
import re
import sysconfig
from pathlib import Path


def docstring_sentences(seed: int = 0) -> list[str]:
    """English sentences from the standard library's docstrings (6-40 words), deduplicated and shuffled."""
    found = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for s in re.split(r"(?<=[.!?])\s+", " ".join((ast.get_docstring(node) or "").split())):
                    if 6 <= len(s.split()) <= 40 and s[:1].isupper() and s.endswith("."):
                        found.add(s)
    texts = sorted(found)
    random.Random(seed).shuffle(texts)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    args.path.parent.mkdir(parents=True, exist_ok=True)
    sentences = docstring_sentences()[:args.count]
    args.path.write_text("\n".join(sentences) + "\n")
    print(f"{len(sentences)} sentences in {args.path}")


if __name__ == "__main__":
    main()
