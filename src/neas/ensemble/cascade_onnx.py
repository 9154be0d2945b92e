"""The early-exit cascade as ONE ONNX graph (issue 37 item 5): a phone or a C++ server runs it from one file.

:func:`export_cascade_onnx` composes the step models that the multi-file cascade writes
(:func:`neas.ensemble.cascade_export.step_models`: step 1 maps the images to the first path's logits and
the shared trunk's features, step j > 1 the features to path j's logits) into one graph with the
``onnx`` helper API. Step 1 always runs; each later step sits in the then-branch of an ``If``, nested
for K > 2; a subgraph reads the outer scope's ``features``, running sum and mask of running images::

    logits_1, features = step1(images);  sum_1 = logits_1
    after step j:      mean_j = sum_j / j   (float32, sum_j = sum_{j-1} + step_j(features) for j > 1)
    after step j < K:  stop_j = max softmax(float64(mean_j) / T) >= t_j
        If(some image is still running after step j):
            then: step j + 1 and everything after it (its own If)
            else: mean_j, j
        logits = Where(stop_j, mean_j, the branch's logits);  stops = Where(stop_j, j, the branch's stops)
    with the model's stored temperature T_out:  logits = logits / T_out

Inputs and outputs: ``images`` float32 (N, 3, S, S), normalised as the ``metadata_props`` say (those of
:func:`neas.ensemble.export.onnx_metadata`) -> ``logits`` float32 (N, C), the mean of the logits of the
paths each image ran divided by the model's stored temperature (``metadata_props`` ``temperature``, as
in the whole ensemble's ONNX file and ``neas.load_ensemble``'s model; null: raw, ``neas export
--raw-logits``); ``stops`` int64 (N,), the step each image stopped at, 1..K. The cascade itself is in
``metadata_props`` too: ``cascade_format`` (:data:`FORMAT`), ``cascade_order``, ``cascade_thresholds``,
``cascade_temperature`` (divides the mean logits for the stopping confidence only; null: 1) and
``cascade_fitted`` (how it was fitted: ``tolerance``, the exit rule ``exit``, ``fitted_on``, ``images``, as
``cascade.json``'s ``fitted``), each a JSON string.

Per image the graph computes what :func:`neas.ensemble.cascade.cascade_predict` does, op for op (torch's
mean of float32 logits, a float64 softmax of it for the confidence), at any batch size. At
batch 1 a step after the image's stop never runs; at batch N a later step runs on the whole batch as
soon as one image needs it, so for batched serving the multi-file cascade, which runs each step on the
images left only, stays the better choice.

The export is checked before anything is written: onnxruntime at batch 1 (and once with all of them in
one batch) against PyTorch's cascade with the *fitted* thresholds, on random images over a wide range
of contrasts chosen to stop at every step the thresholds let them reach; then the same graph built with
thresholds that stop images at every step. Same stop for every image, logits within 1e-4 of PyTorch's
divided by the same output temperature, or no file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from neas.ensemble.cascade import NEVER, cascade_predict
from neas.ensemble.cascade_export import _check_cascade, step_models
from neas.ensemble.export import onnx_metadata
from neas.ensemble.io import EnsembleFile
from neas.ensemble.model import EnsembleNet
from neas.errors import NeasError
from neas.io import write_bytes
from neas.records import CascadeRecord, check_temperature

__all__ = ["FORMAT", "cascade_model", "export_cascade_onnx"]

FORMAT = "neas.cascade-onnx/1"
_TOLERANCE = 1e-4  # max |difference| of the graph's logits from PyTorch's
_POOL = 96  # random images the check chooses from
_PER_STEP = 4  # images checked per step the thresholds let them reach
_ROUNDS = 3  # pools drawn at most while some step has no image with the fitted thresholds
_MARGIN = 1e-5  # a checked image's confidence is at least this far from every threshold it meets


class _Scope:
    """The nodes of one graph (the main graph or an ``If`` branch), each named ``prefix + name``, written
    for the model's opset (reductions, ``Unsqueeze`` and ``GreaterOrEqual`` changed over the opsets)."""

    def __init__(self, prefix: str, opset: int):
        self.prefix, self.opset = prefix, opset
        self.nodes, self.initializers, self.value_info = [], [], []

    def add_step(self, step, j: int) -> str:
        """Step j's graph, renamed under ``step<j>/`` (a later step's input ``features`` is step 1's, read
        from the outer scope); its weights live in this graph. Returns the name of its logits."""
        from onnx.compose import add_prefix_graph

        prefix = f"step{j}/"
        shared = {} if j == 1 else {"features": "step1/features"}
        graph = add_prefix_graph(step.graph, prefix, rename_inputs=False, name_map=shared)
        self.nodes += graph.node
        self.initializers += graph.initializer
        self.value_info += graph.value_info
        return f"{prefix}logits"

    def graph(self, name: str, inputs: list, outputs: list):
        from onnx import helper

        return helper.make_graph(self.nodes, name, inputs, outputs, self.initializers, value_info=self.value_info)

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs) -> str | list[str]:
        """Appends a node named ``prefix + name``; returns the name of its output (the same), or of its
        ``outputs`` outputs (``prefix + name + '_' + i``) when there are more."""
        from onnx import helper

        out = self.prefix + name
        names = [out] if outputs == 1 else [f"{out}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=out, **attrs))
        return out if outputs == 1 else names

    def const(self, name: str, value, dtype) -> str:
        from onnx import numpy_helper

        return self.op("Constant", [], name, value=numpy_helper.from_array(np.array(value, dtype=dtype), name))

    def reduce(self, op_type: str, x: str, name: str, axes: list[int] | None = None) -> str:
        """``op_type`` over ``axes`` (None: every axis), the reduced axes dropped."""
        since = {"ReduceSum": 13, "ReduceMax": 18}[op_type]  # axes: an attribute before, an input from then on
        if axes is None:
            return self.op(op_type, [x], name, keepdims=0)
        if self.opset >= since:
            return self.op(op_type, [x, self.const(f"{name}_axes", axes, np.int64)], name, keepdims=0)
        return self.op(op_type, [x], name, axes=axes, keepdims=0)

    def column(self, x: str, name: str) -> str:
        """(N,) -> (N, 1), so that a per-image mask selects whole rows of (N, C)."""
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(f"{name}_axes", [1], np.int64)], name)
        return self.op("Unsqueeze", [x], name, axes=[1])

    def at_least(self, x: str, threshold: float, name: str) -> str:
        t = self.const(f"{name}_threshold", threshold, np.float64)
        if self.opset >= 12:
            return self.op("GreaterOrEqual", [x, t], name)
        return self.op("Not", [self.op("Less", [x, t], f"{name}_below")], name)


def _branch(scope: _Scope, name: str, outputs: list[str]):
    """An ``If`` branch: no inputs; outputs float32 logits (N, C) and int64 stops (N,)."""
    from onnx import TensorProto, helper

    kinds = (TensorProto.FLOAT, TensorProto.INT64)
    return scope.graph(name, [], [helper.make_tensor_value_info(out, kind, None) for out, kind in zip(outputs, kinds)])


def _stop(scope: _Scope, mean: str, j: int, threshold: float, temperature: float | None) -> str:
    """bool (N,): the max softmax probability of ``mean`` (float64) / ``temperature`` reaches ``threshold``."""
    scaled = (
        mean
        if temperature is None
        else scope.op("Div", [mean, scope.const(f"t{j}", temperature, np.float64)], f"scaled{j}")
    )
    confidence = scope.reduce("ReduceMax", scope.op("Softmax", [scaled], f"softmax{j}", axis=-1), f"conf{j}", [-1])
    return scope.at_least(confidence, threshold, f"stop{j}")


def _from_step(steps: list, j: int, cascade: tuple, state: tuple, scope: _Scope) -> tuple[str, str]:
    """Appends to ``scope`` step j and everything after it; returns the names of the float32 logits
    (N, C) and the int64 stops (N,) of every image that reaches step j. ``state``: ``running``, the
    bool (N,) of the images no earlier step stopped, and ``total``, the float32 sum of the earlier
    paths' logits (both None at step 1). As ``cascade_predict``: torch's mean of float32 logits (a
    float32 sum, path by path, divided by j), and the confidence the float64 softmax of that mean."""
    from onnx import TensorProto

    (thresholds, temperature), (running, total), k = cascade, state, len(steps)
    path = scope.add_step(steps[j - 1], j)
    if j == 1:
        mean = total = path
    else:
        total = scope.op("Add", [total, path], f"sum{j}")
        mean = scope.op("Div", [total, scope.const(f"count{j}", float(j), np.float32)], f"mean{j}")
    here = scope.const(f"step{j}", j, np.int64)
    if j == k:  # the last step stops every image that reaches it
        return mean, scope.op("Expand", [here, scope.op("Shape", [running], f"n{j}")], f"stops{j}")
    exact = scope.op("Cast", [mean], f"mean{j}_as_64", to=TensorProto.DOUBLE)
    stop = _stop(scope, exact, j, thresholds[j - 1], temperature)
    going = scope.op("Not", [stop], f"going{j}")
    running = going if running is None else scope.op("And", [running, going], f"running{j}")
    count = scope.reduce("ReduceSum", scope.op("Cast", [running], f"running{j}_int", to=TensorProto.INT64), f"left{j}")
    any_left = scope.op("Greater", [count, scope.const(f"none{j}", 0, np.int64)], f"any_left{j}")
    later = _Scope(f"cascade/after{j}/", scope.opset)  # then: step j + 1 on, as some image needs it
    then_branch = _branch(later, f"after_step{j}", _from_step(steps, j + 1, cascade, (running, total), later))
    done = _Scope(f"cascade/done{j}/", scope.opset)  # else: every image has stopped, step j's answer as it is
    stops = done.op("Expand", [here, done.op("Shape", [stop], f"n{j}")], f"stops{j}")
    else_branch = _branch(done, f"stop_at_step{j}", [done.op("Identity", [mean], f"logits{j}"), stops])
    rest = scope.op("If", [any_left], f"if{j}", outputs=2, then_branch=then_branch, else_branch=else_branch)
    merged = scope.op("Where", [scope.column(stop, f"row{j}"), mean, rest[0]], f"logits_from{j}")
    return merged, scope.op("Where", [stop, here, rest[1]], f"stops_from{j}")


def cascade_model(
    steps: list,
    thresholds,
    temperature: float | None,
    metadata: dict[str, str],
    output_temperature: float | None = None,
):
    """The single-file cascade (``onnx.ModelProto``) of the step models ``steps`` (those of
    :func:`~neas.ensemble.cascade_export.step_models`, in running order; not modified), stopping at
    step j < K when the max softmax of the mean logits so far, divided by ``temperature``, reaches
    ``thresholds[j - 1]`` (module docstring); its ``logits`` are divided by ``output_temperature`` (None:
    raw); ``metadata`` becomes its ``metadata_props``."""
    from onnx import TensorProto, checker, helper

    if len(steps) < 2 or len(thresholds) != len(steps) - 1:
        raise ValueError(f"need K >= 2 steps and K - 1 thresholds, got {len(steps)} and {len(thresholds)}")
    first = steps[0]
    opset = next(o.version for o in first.opset_import if o.domain in ("", "ai.onnx"))
    main = _Scope("cascade/", opset)
    state = (None, None)
    logits, stops = _from_step(steps, 1, ([float(t) for t in thresholds], temperature), state, main)
    if output_temperature is not None:
        logits = main.op("Div", [logits, main.const("t_out", output_temperature, np.float32)], "scaled_logits")
    main.nodes.append(helper.make_node("Identity", [logits], ["logits"], "cascade/logits"))
    main.nodes.append(helper.make_node("Identity", [stops], ["stops"], "cascade/stops"))
    num_classes = first.graph.output[0].type.tensor_type.shape.dim[1]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes.dim_value or "classes"]),
        helper.make_tensor_value_info("stops", TensorProto.INT64, ["batch"]),
    ]
    model = helper.make_model(
        main.graph("neas_cascade", list(first.graph.input), outputs),
        opset_imports=list(first.opset_import),
        producer_name="neas",
        ir_version=first.ir_version,
    )
    helper.set_model_props(model, metadata)
    checker.check_model(model)
    return model


def _metadata(
    net: EnsembleNet, cascade: CascadeRecord, info: EnsembleFile | None, temperature: float | None
) -> dict[str, str]:
    """The whole ensemble's ONNX metadata (``temperature``: what the logits are divided by) and the cascade's."""
    base = onnx_metadata(net, info, temperature)
    return base | {
        "output": "logits: float32 (batch, num_classes), the mean of the logits of the paths each image ran"
        + (" divided by the temperature" if temperature is not None else ", unscaled (raw)")
        + "; stops: int64 (batch,), the step each image stopped at, 1..K",
        "cascade_format": FORMAT,
        "cascade_order": json.dumps(list(cascade.order)),
        "cascade_thresholds": json.dumps(list(cascade.thresholds)),
        "cascade_temperature": json.dumps(cascade.temperature),
        "cascade_fitted": json.dumps(cascade.fitted()),
    }


def _pool(net: EnsembleNet, order, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:data:`_POOL` random images from very low to very high contrast (so that their confidences span
    a wide range) and PyTorch's logits of every path on them, in ``order`` (K, N, C)."""
    gen = torch.Generator().manual_seed(seed)
    size, channels = net.space.input_size, net.space.in_channels
    contrast = torch.logspace(-2, 6, _POOL, base=2).view(-1, 1, 1, 1)
    x = torch.randn(_POOL, channels, size, size, generator=gen) * contrast
    with torch.no_grad():
        per_path = net.path_logits(x)
    return x, torch.stack([per_path[k] for k in order])


def _fitted_probe(net: EnsembleNet, cascade: CascadeRecord, first: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """``first`` (a :func:`_pool`), grown by more pools, up to :data:`_ROUNDS` in all, while with the
    fitted thresholds no image of it stops at some step (thresholds of 0 or above 1 make a step
    unreachable: then no pool has one)."""
    images, in_order = first
    for seed in range(1, _ROUNDS):
        if min(_chosen(in_order, cascade.thresholds, cascade.temperature)[1]) > 0:
            break
        more = _pool(net, cascade.order, seed)
        images, in_order = torch.cat([images, more[0]]), torch.cat([in_order, more[1]], 1)
    return images, in_order


def _every_step_thresholds(in_order: torch.Tensor, temperature: float | None) -> list[float]:
    """Thresholds that stop some of the images reaching each step and pass the others on: step by
    step, the midpoint of the widest gap between the middle half of the confidences of the images
    that reach it."""
    t = 1.0 if temperature is None else float(temperature)
    reach, thresholds = torch.ones(in_order.shape[1], dtype=torch.bool), []
    for j in range(1, in_order.shape[0]):
        confidence = (in_order[:j].mean(0).double() / t).softmax(-1).max(-1).values
        ranked = confidence[reach].sort().values
        n = len(ranked)
        if n < 2:  # too few images reach this step to split them: it stops none
            thresholds.append(NEVER)
            continue
        lo, hi = n // 4, max(n // 4 + 1, 3 * n // 4)
        i = lo + int((ranked[lo + 1 : hi + 1] - ranked[lo:hi]).argmax())
        thresholds.append(float((ranked[i] + ranked[i + 1]) / 2))
        reach &= confidence < thresholds[-1]
    return thresholds


def _chosen(in_order: torch.Tensor, thresholds, temperature: float | None) -> tuple[torch.Tensor, list[int]]:
    """Up to :data:`_PER_STEP` images per step they stop at, each clear of every threshold it meets by
    :data:`_MARGIN` (an image on a threshold may stop either side of it in another runtime); the
    indices and the count per step."""
    k = in_order.shape[0]
    _, stops = cascade_predict(in_order, thresholds, temperature)
    t = 1.0 if temperature is None else float(temperature)
    clear = torch.ones_like(stops, dtype=torch.bool)
    for j in range(1, k):  # step j's confidence decides every image that reaches it
        confidence = (in_order[:j].mean(0).double() / t).softmax(-1).max(-1).values
        clear &= (stops < j) | ((confidence - thresholds[j - 1]).abs() > _MARGIN)
    picked = [torch.nonzero(clear & (stops == j)).flatten()[:_PER_STEP] for j in range(1, k + 1)]
    return torch.cat(picked), [len(p) for p in picked]


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a check of a few images: no thread pool to spin up
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _check(model, images: torch.Tensor, expected: tuple, what: str) -> float:
    """The graph's answers at batch 1, image by image, and for all the images in one batch, against
    ``expected`` (PyTorch's logits and stops); the max |difference| of the logits."""
    session, logits, stops = _session(model), expected[0].numpy(), expected[1].numpy()
    runs = [(slice(i, i + 1), session.run(None, {"images": images[i : i + 1].numpy()})) for i in range(len(images))]
    runs.append((slice(None), session.run(None, {"images": images.numpy()})))
    worst = 0.0
    for index, (got_logits, got_stops) in runs:
        if not np.array_equal(got_stops, stops[index]):
            raise NeasError(
                f"single-file cascade export check failed ({what}): the ONNX graph stops "
                f"{int((got_stops != stops[index]).sum())} of {len(got_stops)} images at another step than "
                "PyTorch's cascade; nothing was written"
            )
        worst = max(worst, float(np.abs(got_logits - logits[index]).max(initial=0.0)))
    if not worst <= _TOLERANCE:
        raise NeasError(
            f"single-file cascade export check failed ({what}): the ONNX graph's logits differ from PyTorch's "
            f"cascade by {worst:.3g} (> {_TOLERANCE}); nothing was written"
        )
    return worst


def export_cascade_onnx(
    net: EnsembleNet,
    cascade: CascadeRecord | dict,
    out: str | Path,
    info: EnsembleFile | None = None,
    opset: int = 17,
    temperature: float | None = None,
) -> dict:
    """Writes the cascade as one ONNX file ``out`` (module docstring), verified first.

    Args:
        net: the ensemble (K >= 2 paths).
        cascade: ``EnsembleFile.cascade`` (or its JSON): ``order`` (K paths), ``thresholds`` (K - 1),
            ``temperature``.
        out: the file (replaced atomically; nothing is written when the check fails).
        info: the model file's record (its classes go into the metadata).
        temperature: divides the graph's ``logits`` (the model file's stored one, as ``neas export``
            passes it; None: raw mean logits); metadata ``temperature``. The stopping rule is ``cascade``'s.

    Returns:
        ``max_diff``: the max |difference| of the graph's logits from PyTorch's cascade (divided by
        ``temperature``) over every check; ``fitted_images``: how many images the check with the
        fitted thresholds stopped at each step (0 where no image reached that step);
        ``every_step_images``: the same for the check with thresholds that stop images at every step.
    """
    cascade = _check_cascade(net, cascade)
    temperature = check_temperature(temperature, "export temperature", nullable=True)
    net = net.cpu().eval()
    steps = step_models(net, list(cascade.order), opset)
    metadata = _metadata(net, cascade, info, temperature)
    model = cascade_model(steps, cascade.thresholds, cascade.temperature, metadata, temperature)
    worst, counts = 0.0, {}
    every_step = _pool(net, cascade.order, seed=0)
    fitted = _fitted_probe(net, cascade, every_step)
    every_step_thresholds = _every_step_thresholds(every_step[1], cascade.temperature)
    for what, thresholds, (images, in_order) in (
        ("fitted thresholds", cascade.thresholds, fitted),
        ("thresholds stopping at every step", every_step_thresholds, every_step),
    ):
        checked = (
            model
            if thresholds is cascade.thresholds
            else cascade_model(steps, thresholds, cascade.temperature, {}, temperature)
        )
        index, counts[what] = _chosen(in_order, thresholds, cascade.temperature)
        logits, stops = cascade_predict(in_order[:, index], thresholds, cascade.temperature)
        expected = (logits if temperature is None else logits / temperature, stops)  # like with like
        worst = max(worst, _check(checked, images[index], expected, what))
    write_bytes(out, model.SerializeToString())
    return {
        "max_diff": worst,
        "fitted_images": counts["fitted thresholds"],
        "every_step_images": counts["thresholds stopping at every step"],
    }
