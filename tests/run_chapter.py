"""Execute one MyST notebook chapter in a kernel and list its error and stderr outputs (a quick check while
writing a chapter, without building the book):

    python tests/run_chapter.py book/03_local_substitutes.md
"""
import pathlib
import sys

import jupytext
import nbclient

path = pathlib.Path(sys.argv[1]).resolve()
nb = jupytext.read(path)
nbclient.NotebookClient(nb, kernel_name="python3", timeout=1200,
                        resources={"metadata": {"path": str(path.parent)}}).execute()
bad = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error" or o.get("name") == "stderr"]
for o in bad:
    print(o.get("ename") or "stderr", (o.get("evalue") or o.get("text", ""))[:500])
print(f"{path.name}: {len(bad)} error or stderr outputs")
sys.exit(1 if bad else 0)
