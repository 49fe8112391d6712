"""Run the code cells of a MyST notebook chapter as one script (quick check while writing a chapter):
    python tests/run_chapter.py book/03_local_substitutes.md
"""
import re, sys, matplotlib
matplotlib.use("Agg")
text = open(sys.argv[1]).read()
cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S)
ns = {}
import myst_nb
myst_nb.glue = lambda name, val, display=True: ns.setdefault("_glued", {}).__setitem__(name, val)
for i, c in enumerate(cells):
    c = "\n".join(l for l in c.splitlines() if not l.startswith(":tags:"))
    print(f"--- cell {i}")
    exec(compile(c, f"cell{i}", "exec"), ns)
print("glued:", ns.get("_glued"))
