"""Print the shape of a DPS tree (usage: python docs/review/shape.py TREE): the modules at
topics/ top level, product modules over 450 lines, and classes over 25 methods (ast counts)."""
import ast
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
product = [p for d in ("topics", "channel_layer", "dps_site") for p in (root / d).rglob("*.py")
           if "migrations" not in p.parts]
mods, classes = [], []
for p in product:
    src = p.read_text()
    mods.append((len(src.splitlines()), str(p.relative_to(root))))
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ClassDef):
            meths = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            attrs = set()
            for n in ast.walk(node):
                if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                        and n.value.id == "self" and isinstance(n.ctx, ast.Store)):
                    attrs.add(n.attr)
            classes.append((len(meths), len(attrs), node.name, str(p.relative_to(root))))
top = sorted(p.name for p in (root / "topics").iterdir() if p.suffix == ".py")
pk = sorted(p.name for p in (root / "topics").iterdir() if p.is_dir() and (p / "__init__.py").exists())
print(json.dumps({"topics_top_level_modules": len(top), "topics_subpackages": pk,
                  "product_modules": len(mods),
                  "modules_over_450_lines": [m for m in sorted(mods, reverse=True) if m[0] > 450],
                  "largest_modules": sorted(mods, reverse=True)[:8],
                  "classes_over_25_methods": [c for c in sorted(classes, reverse=True) if c[0] > 25],
                  "largest_classes": sorted(classes, reverse=True)[:8]}, indent=1))
