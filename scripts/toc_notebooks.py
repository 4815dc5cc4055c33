"""Print the .ipynb path of every chapter listed in _toc.yml, in book order."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
for part in toc.get("parts", []):
    for chapter in part["chapters"]:
        notebook = Path(chapter["file"] + ".ipynb")
        if (ROOT / notebook).exists():
            print(notebook)
