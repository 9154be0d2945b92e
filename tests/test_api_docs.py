"""The public API's documentation: every name of ``neas.__all__`` documents its arguments, what it returns and
an example (the examples run, as doctests); the pdoc reference builds without a warning; the README's Python
section starts by loading a trained ensemble and running it on an image, and that snippet runs."""

import doctest
import inspect
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import neas

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(neas.__all__)


def _sections(doc: str) -> dict[str, str]:
    """Google-style sections of a docstring: {"Args": text, "Returns": text, "Example": text, ...}."""
    found, current = {}, None
    for line in doc.splitlines():
        header = re.fullmatch(r"(\w+):", line.strip())
        if header and not line.startswith(" "):
            current = header.group(1)
            found[current] = ""
        elif current:
            found[current] += line + "\n"
    return found


@pytest.mark.parametrize("name", NAMES)
def test_every_public_name_documents_its_arguments_returns_and_an_example(name):
    obj = getattr(neas, name)
    doc = inspect.getdoc(obj) or ""
    sections = _sections(doc)
    assert "Example" in sections and ">>>" in sections["Example"], f"{name}: no Example section with a doctest"
    assert "Args" in sections, f"{name}: no Args section"
    if not inspect.isclass(obj):
        assert "Returns" in sections, f"{name}: no Returns section"
    try:
        params = inspect.signature(obj).parameters
    except ValueError:  # an exception type: its one argument is the message
        params = {"message": None}
    for param in params:
        if param not in ("self", "args", "kwargs"):
            assert re.search(rf"(^|[ ,]){param}[,:]", sections["Args"], re.M), (
                f"{name}: argument {param!r} undocumented"
            )


@pytest.mark.parametrize("name", NAMES)
def test_the_examples_run(name):
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    obj = getattr(neas, name)
    for test in finder.find(obj, name, globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0, f"{name}: {runner.failures} of {runner.tries} examples failed"


def test_the_api_reference_builds_without_warnings(tmp_path):
    build = runpy.run_path(str(ROOT / "docs" / "build_api.py"))["build"]
    page = build(tmp_path / "api").read_text()  # warnings are errors inside build()
    for name in NAMES:
        assert f'id="{name}"' in page, name


def _snippet(section: str) -> str:
    readme = (ROOT / "README.md").read_text()
    text = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_readme_python_section_loads_an_ensemble_and_runs_it_on_an_image(tmp_path, monkeypatch, capsys):
    from neas import EnsembleArch, SearchSpace, build_ensemble, save_ensemble

    code = _snippet("Python API")
    assert "load_ensemble(" in code and "resolve_data_config(" in code  # it starts with what users need first
    space = SearchSpace.preset("tiny")
    run = tmp_path / "runs" / "retrain"
    run.mkdir(parents=True)
    save_ensemble(build_ensemble(space, EnsembleArch.sample(space, 0), 3), run / "model.safetensors",
                  classes=("cat", "dog", "frog"))  # fmt: skip
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "cat.jpg")  # not S x S: resized and cropped as neas evaluate does
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    label, confidence = capsys.readouterr().out.split()
    assert label in ("cat", "dog", "frog") and 1 / 3 <= float(confidence) <= 1
