"""Builds the API reference of ``neas``'s public names (``neas.__all__``) with pdoc.

    python docs/build_api.py --out docs/api      # then open docs/api/neas.html

``tests/test_api_docs.py`` builds it into a temporary folder and fails on any pdoc warning, so the
reference builds wherever the README's test command passes (pdoc is in the ``dev`` extra). The docstrings
are Google style; their examples are doctests, run by the same test file.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

__all__ = ["build"]


def build(out: str | Path) -> Path:
    """Writes the reference into ``out`` (created if needed); returns the page of ``neas``.

    Every pdoc warning (a name that does not resolve, an annotation it cannot read, ...) is raised
    as an error.
    """
    import pdoc
    import pdoc.render

    import neas

    for name in neas.__all__:  # the names load on first use: read once, they sit where pdoc looks
        getattr(neas, name)
    pdoc.render.configure(docformat="google", show_source=False, footer_text=f"neas {neas.__version__}")
    out = Path(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc("neas", "!neas\\..*", output_directory=out)  # the package's public names, not every module
    return out / "neas.html"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/api", help="output folder")
    print(build(parser.parse_args().out))
