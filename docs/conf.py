"""Sphinx configuration of the sitekit documentation (``make docs``).

The build runs offline (hospital networks often are): no intersphinx, no CDN assets.  The
gallery in ``examples/gallery`` is executed during the build, so every example stays runnable.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("MPLBACKEND", "Agg")

import sitekit  # noqa: E402

project = "sitekit"
author = "the sitekit developers"
copyright = f"{date.today().year}, {author}"
release = sitekit.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_typehints = "none"
autodoc_default_options = {"inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

html_theme = "pydata_sphinx_theme"
html_title = f"sitekit {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": True,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}

sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples" / "gallery"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
}

# -- API reference: one page per public module, listing its ``__all__`` ----------------------
# Written at build time so the reference always matches the code (a renamed or new public name
# appears without editing the docs).
PUBLIC_MODULES = [
    ("sitekit.harmonize", "Harmonisation (ComBat family)"),
    ("sitekit.harmonize.earl", "EARL phantom accreditation"),
    ("sitekit.features", "Radiomics extraction"),
    ("sitekit.robustness", "Robustness and cross-site validation"),
    ("sitekit.robustness.perturbations", "Image perturbations"),
    ("sitekit.robustness.models", "Image models"),
    ("sitekit.monitor", "Surveillance after deployment"),
    ("sitekit.reports", "Reports"),
    ("sitekit.datasets", "Synthetic data and sample data"),
    ("sitekit.io", "Input and output"),
    ("sitekit.exceptions", "Errors and warnings"),
]


def _write_api_pages() -> None:
    import importlib
    import inspect

    api = HERE / "api"
    api.mkdir(exist_ok=True)
    entries = []
    for name, title in PUBLIC_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue  # a part not in this version
        names = sorted(getattr(module, "__all__", []), key=str.lower)
        classes = [n for n in names if inspect.isclass(getattr(module, n, None))]
        functions = [n for n in names if callable(getattr(module, n, None)) and n not in classes]
        data = [n for n in names if n not in classes and n not in functions]
        lines = [f"{title}", "=" * len(title), "", f".. automodule:: {name}", "   :no-members:", "",
                 f".. currentmodule:: {name}", ""]
        for heading, group, template in (("Classes", classes, "class.rst"),
                                         ("Functions", functions, None)):
            if not group:
                continue
            lines += [heading, "-" * len(heading), "", ".. autosummary::", "   :toctree: generated/",
                      "   :nosignatures:"]
            if template:
                lines.append(f"   :template: {template}")
            lines += [""] + [f"   {n}" for n in group] + [""]
        if data:
            lines += ["Constants", "---------", ""]
            for n in data:
                lines += [f".. autodata:: {name}.{n}", "   :no-value:", ""]
        page = api / f"{name}.rst"
        text = "\n".join(lines) + "\n"
        if not page.exists() or page.read_text() != text:
            page.write_text(text)
        entries.append(name)
    index = ["API reference", "=============", "",
             "Every public name, rendered from its numpydoc docstring.", "",
             ".. toctree::", "   :maxdepth: 1", ""] + [f"   {e}" for e in entries]
    text = "\n".join(index) + "\n"
    idx = api / "index.rst"
    if not idx.exists() or idx.read_text() != text:
        idx.write_text(text)


_write_api_pages()
templates_path = ["_templates"]
# Type lines are cross-referenced (this keeps names such as ``n_features_in_`` literal text);
# the build is offline, so the default links into Python's and NumPy's docs become plain
# object references instead of intersphinx targets.
from numpydoc.xref import DEFAULT_LINKS  # noqa: E402

numpydoc_xref_param_type = True
numpydoc_xref_ignore = {"of", "shape", "or", "and", "default", "optional", "the", "a", "an", "with", "per", "in", "to", "one", "each"}
numpydoc_xref_aliases = {key: f":obj:`{key}`" for key in DEFAULT_LINKS}
