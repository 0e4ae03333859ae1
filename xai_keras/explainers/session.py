"""The engine every front end runs on: a model prepared once for explaining.

A `Session` fixes what `explain` used to decide per call: which output is explained and how it
is read (`output`, `head`, `score`, `reshape`), the other inputs of a multi-input model held
fixed (`inputs`), the model's input `value_range`, the `batch_size` and whether kernels are
XLA-compiled. It owns

- the runners (`runner(layer, guided)`): the model's own graph re-run, kernels traced once,
- image checking and conversion (`images`: arrays, tensors, `tf.data`), target resolution
  (`targets`), and the first pass that decides how outputs become probabilities,
- **the one padded batch loop** (`map_batches`): every batched pass in the package goes
  through it, each batch padded up to one of a few bucket sizes (`batch_buckets`), so a
  compiled kernel traces at most once per bucket, however many images come.

`explain`, `explain_dataset`, `sag`, the metrics, `evaluate_model` and `ExplainCallback` take a
model or a `Session`; `Session.of` turns either into a session, so every front end accepts every
model form.

Example:
    >>> s = Session(model, output="age", head="linear", value_range=(-1, 1), batch_size=64)
    >>> exp = explain(s, images, "gradcam")
    >>> curves = deletion(s, images, exp.maps)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from xai_keras.checks import check_positive_int, describe_sizes
from xai_keras.errors import InputError
from xai_keras.explainers.graph import LayerTaps, ModelRunner, hold_inputs, model_store
from xai_keras.explainers.heads import Head, check_scores_shape, resolve_head
from xai_keras.explainers.layers import LayerChoice, default_layer
from xai_keras.explainers.preprocessing import attached_preprocessor
from xai_keras.explainers.ranges import ValueRange, check_values, resolve_value_range
from xai_keras.sources import Source, as_source, check_image_shape

__all__ = [
    "MODEL_FORM_ARGS",
    "Session",
    "batch_buckets",
    "model_form",
    "check_images",
    "check_model",
    "check_targets",
    "runner_for",
]

# The keyword arguments that describe what is explained; every front end passes them on.
# `explain`, `sag`, `Session` and `explain_dataset` list them as explicit keywords, in this
# order (for completion and `help()`; tests/test_engine.py checks they agree), and collect
# them with `model_form(locals())`; the metrics and `ExplainCallback` take them as
# `**model_form`.
MODEL_FORM_ARGS = ("output", "head", "score", "inputs", "reshape", "value_range")
_SETTINGS = (*MODEL_FORM_ARGS, "preprocessor", "batch_size", "jit_compile")

# Runners whose head holds a user's function (`score=`, `reshape=`) are kept for at most this
# many heads per model (least recently used dropped): a fresh lambda per call cannot be told
# from a new function, and each would otherwise keep a runner and its traces forever. One
# `explain` call needs up to three runners per head (layer, input, guided).
MAX_FUNCTION_HEADS = 4


def model_form(values: Mapping[str, Any], pop: bool = False) -> dict[str, Any]:
    """The model-form arguments (`MODEL_FORM_ARGS`) found in `values`: a front end's
    `locals()`, or a metric's `**options` (with `pop`, taken out of them, so the rest can go
    to the method). The one place front ends collect them by name."""
    form = {k: values[k] for k in MODEL_FORM_ARGS if k in values}
    if pop:
        for k in form:
            del values[k]
    return form


def check_model(model: Any, name: str = "model") -> keras.Model:
    """`model` itself if it is a Keras model, else a clear error."""
    if not isinstance(model, keras.Model):
        raise InputError(
            f"The `{name}` argument must be a keras.Model or an xai_keras Session. "
            f"Received: {name}={type(model).__name__}."
        )
    return model


def runner_for(
    model: keras.Model,
    layer: Any = None,
    guided: bool = False,
    head: Head | None = None,
    jit_compile: bool = False,
) -> ModelRunner:
    """The `ModelRunner` for (model, layer, guided, head, jit_compile), built once and kept on
    the model.

    Kept on the model itself (not in a global cache that the runner would keep alive), so the
    compiled kernels are traced once, reused by every later call, and freed with the model.
    Runners for heads with a user's function are kept for the `MAX_FUNCTION_HEADS` most
    recently used such heads only, so memory stays bounded when a new function comes each call.
    """
    head = head or Head()
    per_model = model_store(model).setdefault("runners", {})
    key = (id(layer), guided, head, jit_compile)
    runner = per_model.pop(key, None)  # re-inserted last: the dict's order is the LRU order
    if runner is None:
        runner = ModelRunner(model, layer, guided=guided, head=head, jit_compile=jit_compile)
    per_model[key] = runner
    if _has_function(head):
        recent = dict.fromkeys(k[2] for k in reversed(per_model) if _has_function(k[2]))
        for old in list(recent)[MAX_FUNCTION_HEADS:]:
            for k in [k for k in per_model if k[2] == old]:
                del per_model[k]
    return runner


def _has_function(head: Head) -> bool:
    return head.score is not None or head.reshape is not None


def _expected_shape(model: keras.Model, index: int) -> tuple | None:
    """(H, W, C) of input `index`, or None for a subclassed model (no symbolic inputs)."""
    try:
        return tuple(model.inputs[index].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def batch_buckets(size: int) -> tuple[int, ...]:
    """The batch sizes a kernel is run at for batches of at most `size` rows: the powers of two
    below `size`, and `size`. A lone batch is padded up to the smallest bucket that holds it
    (so it never carries as many padding rows as real ones), and a compiled kernel traces at
    most `len(batch_buckets(size))` times (about log2(size) + 1) whatever the sizes asked
    for."""
    return (*(1 << i for i in range((size - 1).bit_length())), size)


def _bucket(rows: int, size: int) -> int:
    """The smallest of `batch_buckets(size)` that holds `rows` (<= size) rows."""
    return min(size, 1 << (rows - 1).bit_length())


def _pad(rows: Any, size: int, pad_row: Any) -> Any:
    """`rows` grown to `size` rows by repeating the last one (or with `pad_row`)."""
    real = int(rows.shape[0])
    if real == size:
        return rows
    if pad_row is None:
        extra = tf.repeat(rows[-1:], size - real, axis=0)
    else:
        extra = tf.repeat(tf.cast(tf.convert_to_tensor(pad_row)[None], rows.dtype), size - real, 0)
    return tf.concat([rows, extra], axis=0)


class Session:
    """A model prepared once: what is explained, how it is read, and how it is batched.

    Args:
        model: a Keras model (Functional, Sequential, nested or subclassed).
        output: which output of a multi-output model (index or name).
        head: "softmax", "sigmoid", "linear", or None to read the model's final activation.
        score: `score(outputs) -> (N,)` explained instead of a class.
        inputs: a multi-input model's other inputs, `{name: array}` (one row or one per image).
        reshape: `(N, T, C) -> (N, h, w, C)` for token layers that are not a square grid.
        value_range: the model's input range ((low, high), "tf", "torch", "caffe", ...).
        batch_size: images (or masked images) per compiled pass.
        jit_compile: compile the kernels with XLA (see the README's speed section for where it
            pays).
        preprocessor: what turns the images given into model inputs: None (default) runs the
            model's attached preprocessor where it has one (a KerasHub task's
            `model.preprocessor`, as `predict` does: raw images of any size in, the value range
            read from its converter); False gives images to the model as they are; or a
            function `images -> model inputs`.

    See `explain` for the model-form arguments in full.
    """

    def __init__(
        self,
        model: keras.Model,
        output: int | str | None = None,
        head: str | None = None,
        score: Callable | None = None,
        inputs: dict[str, Any] | None = None,
        reshape: Callable | None = None,
        value_range: Any = None,
        batch_size: int = 32,
        jit_compile: bool = False,
        preprocessor: Callable | bool | None = None,
    ):
        self.model = check_model(model)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.jit_compile = bool(jit_compile)
        self.head, self.held = resolve_head(model, output, head, score, inputs, reshape)
        self.preprocessor = attached_preprocessor(model, preprocessor)
        self.value_range: ValueRange | None = resolve_value_range(value_range) or (
            self.preprocessor.value_range if self.preprocessor else None
        )
        self._settings = dict(
            model_form(locals()), batch_size=batch_size, jit_compile=jit_compile,
            preprocessor=self.preprocessor or False,
        )  # fmt: skip
        self.runner = self.runner_for()
        hold_inputs(model, {i: rows[:1] for i, rows in self.held.items()})
        self._num_scores = self.runner.num_scores
        self._default: LayerChoice | None = None

    @classmethod
    def of(cls, model: keras.Model | Session, **settings: Any) -> Session:
        """`model` as a session: a `Session` is returned as it is (or with the settings given
        here, those not None, changed), a model gets a new one."""
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise InputError(
                f"Unknown argument(s) {', '.join(unknown)}: the model is described by "
                f"{', '.join(_SETTINGS)}."
            )
        given = {k: v for k, v in settings.items() if v is not None}
        if isinstance(model, Session):
            if not given or all(model._settings.get(k) is v for k, v in given.items()):
                return model
            return cls(model.model, **{**model._settings, **given})
        return cls(model, **given)

    @classmethod
    def from_options(cls, model: keras.Model | Session, options: dict[str, Any]) -> Session:
        """`Session.of` with the model-form arguments and `batch_size` taken out of `options`
        (a metric's `**explain_options`; what is left goes to `explain`)."""
        form = model_form(options, pop=True)
        return cls.of(model, **form, batch_size=options.pop("batch_size", None))

    def with_model(self, model: keras.Model) -> Session:
        """A session with these settings for another model (e.g. a randomised copy)."""
        return Session(model, **self._settings)

    def replace(self, **settings: Any) -> Session:
        """A session like this one with some settings changed (e.g. `batch_size`)."""
        return Session.of(self, **settings)

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._settings.items() if v is not None)
        return f"Session({self.model.name!r}, {given})"

    # -- runners ------------------------------------------------------------------------------
    def runner_for(self, layer: Any = None, guided: bool = False) -> ModelRunner:
        """The runner that records `layer` (and guides ReLUs), for this session's head."""
        return runner_for(self.model, layer, guided, self.head, self.jit_compile)

    def default_layer(self) -> LayerChoice:
        """The layer CAMs explain when none is named (`layers.default_layer`), with token
        models checked by one gradient pass on a probe image: the default is the last token
        layer whose patch tokens the explained score depends on."""
        if self._default is None:
            self._default = default_layer(self.model, self.patch_gradients)
        return self._default

    def patch_gradients(self, layers: list[Any]) -> list[bool]:
        """For each token layer, whether the explained score sends gradient to its patch
        tokens (on two random probe images in the value range)."""
        shape = _expected_shape(self.model, self.head.image_input)
        pixels = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype(np.float32)
        x = self.value_range.from_pixels(pixels) if self.value_range else pixels / 255.0
        return LayerTaps(self.model, layers, self.head).patch_gradients(x)

    # -- inputs -------------------------------------------------------------------------------
    def source(self, dataset: Any) -> Source:
        """A dataset, arrays or a folder as one stream of (image, label) for this model's
        image input (see `xai_keras.sources`)."""
        folder = isinstance(dataset, (str, os.PathLike))
        if self.preprocessor is not None and not folder:
            dataset = self._preprocessed(dataset, "dataset")
        source = as_source(dataset, self.model, self.head.image_input, self._num_scores)
        if self.preprocessor is not None and folder:  # read at the model's size, in [0, 1]
            fn = self.preprocessor.fn

            def mapped(ds: tf.data.Dataset) -> tf.data.Dataset:
                return ds.map(lambda x, *rest: (fn(x * 255.0), *rest))

            items = source.items
            source = dataclasses.replace(
                source,
                elements=mapped(source.elements),
                items=(lambda first, stop: mapped(items(first, stop))) if items else None,
            )
        return source

    def _preprocessed(self, images: Any, name: str) -> Any:
        """Raw images (an array, an `(images, labels)` pair or a dataset) through the
        preprocessor."""
        if isinstance(images, tf.data.Dataset):
            return self.preprocessor.dataset(images)
        if isinstance(images, tuple) and len(images) == 2:
            return self._preprocessed(images[0], name), images[1]
        return self.preprocessor(images, name, self.batch_size)

    def images(self, images: Any, name: str = "images") -> tuple[tf.Tensor, bool]:
        """Validate images (an array, tensor or `tf.data.Dataset`) against the image input;
        return a float32 (N, H, W, C) tensor and whether one image (H, W, C) was given. The
        first images seen decide how the outputs become probabilities."""
        if self.preprocessor is not None:
            images = self._preprocessed(images, name)
        x, single = check_images(images, self.model, name, self.head.image_input)
        inputs = getattr(self.model, "inputs", None) or []
        model_dtype = inputs[self.head.image_input].dtype if inputs else None
        check_values(getattr(images, "dtype", None), x, self.value_range, model_dtype, name)
        if self.runner.outputs_are_probabilities is None and self.runner.kind == "auto":
            self.runner.decide_squash(self.runner.forward_fn(x[:1]))
        return x, single

    def num_scores(self, x: tf.Tensor | None = None) -> int:
        """The number of score columns (what targets index); a subclassed model is run on
        `x[:1]` to learn it."""
        if self._num_scores is None:
            if x is None:
                raise InputError(f"Model {self.model.name!r} is subclassed: pass images first.")
            if self.head.score is None:
                first = keras.tree.flatten(self.model(x[:1], training=False))[self.head.output]
                check_scores_shape(first.shape, self.head.output, self.model.name)
            self._num_scores = int(self.runner.forward_fn(x[:1]).shape[-1])
        return self._num_scores

    def targets(self, targets: Any, x: tf.Tensor) -> np.ndarray:
        """Targets checked against the classes: (N,) int32, -1 where the top class is meant."""
        return check_targets(targets, int(x.shape[0]), self.num_scores(x))

    def explained(
        self, x: tf.Tensor, targets: Any = None, checked: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(targets with -1 replaced by each image's top class, their clean probabilities),
        each image read with its own held inputs. `targets` is checked first unless
        `checked` (an int32 array from `targets`, -1 allowed)."""
        t = np.asarray(targets, np.int32) if checked else self.targets(targets, x)
        probs = np.concatenate([self.probabilities(x[g]) for g in self.groups(len(t))])
        t = np.where(t < 0, probs.argmax(axis=1), t).astype(np.int32)
        return t, probs[np.arange(len(t)), t]

    def check_class_names(self, class_names: Any, x: tf.Tensor | None = None) -> list | None:
        """`class_names` as a list, refusing a count that does not match the classes."""
        if class_names is None:
            return None
        names = list(class_names)
        if self.head.score is None and len(names) != self.num_scores(x):
            raise InputError(
                f"`class_names` has {len(names)} names but model {self.model.name!r} has "
                f"{self.num_scores(x)} classes; give one name per class, in class-index order."
            )
        return names

    def per_image_rows(self, n: int) -> dict[int, np.ndarray] | None:
        """The held inputs when they differ between the `n` images (else None)."""
        for index, rows in self.held.items():
            if rows.shape[0] not in (1, n):
                raise InputError(
                    f"Held input {index} has {rows.shape[0]} rows; give one row, or one per "
                    f"image ({n})."
                )
        if all(rows.shape[0] == 1 or (rows == rows[:1]).all() for rows in self.held.values()):
            return None
        return {i: np.broadcast_to(r, (n, *r.shape[1:])) for i, r in self.held.items()}

    def groups(self, n: int) -> Iterator[slice]:
        """Index ranges of `n` images that can share passes: all at once when the held inputs
        are one row for all, else one image at a time with that image's row held."""
        rows = self.per_image_rows(n)
        if rows is None:
            hold_inputs(self.model, {i: r[:1] for i, r in self.held.items()})
            yield slice(0, n)
            return
        for j in range(n):
            hold_inputs(self.model, {i: r[j : j + 1] for i, r in rows.items()})
            yield slice(j, j + 1)

    # -- the batch loop -----------------------------------------------------------------------
    def map_batches(
        self,
        kernel: Callable,
        *arrays: Any,
        size: int | None = None,
        pad: tuple | None = None,
        combine: str = "concat",
    ) -> Any:
        """`kernel(*batch)` over batches of `arrays` (same first dimension), each of a
        bucket size.

        Batches hold `size` rows (default: the session's batch size). The last of several is
        padded to `size` too (the kernel runs at that size in this call anyway: no new trace);
        a single batch of fewer rows is padded up to the smallest of `batch_buckets(size)` that
        holds it. Padding repeats the last row (or uses the rows in `pad`, one per array, e.g.
        zeros that make a padded row count for nothing). A compiled kernel so traces at most
        once per bucket, whatever the number of rows of each call, and a call adds at most one
        shape. With `combine="concat"` the outputs (a tensor or a tuple/dict of them; None
        entries stay None) lose their padded rows and are concatenated; with "sum" they are
        added up (the padding must then add nothing). `kernel` must treat rows independently:
        padding rows are not results.
        """
        n = int(arrays[0].shape[0])
        size = size or self.batch_size
        # numpy rows are sliced as numpy (cheap) and converted per batch; eager tensor slices
        # cost ~0.1 ms each, which adds up over the hundreds of chunks of RISE or LIME.
        rows = [a if isinstance(a, (np.ndarray, tf.Tensor)) else np.asarray(a) for a in arrays]
        pads = pad or (None,) * len(rows)
        parts = []
        for start in range(0, n, size):
            real = min(size, n - start)
            batch = [tf.convert_to_tensor(r[start : start + size]) for r in rows]
            padded = size if n > size else _bucket(real, size)
            if real < padded:  # only the last batch is padded (and trimmed below)
                batch = [_pad(b, padded, p) for b, p in zip(batch, pads)]
            out = kernel(*batch)
            if combine == "concat" and real < padded:
                out = tf.nest.map_structure(lambda t, r=real: None if t is None else t[:r], out)
            parts.append(out)
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], tf.Tensor):
            return tf.add_n(parts) if combine == "sum" else tf.concat(parts, axis=0)
        join = tf.add_n if combine == "sum" else functools.partial(tf.concat, axis=0)
        return tf.nest.map_structure(lambda *ts: None if ts[0] is None else join(ts), *parts)

    # -- plain passes -------------------------------------------------------------------------
    def probabilities(self, x: Any) -> np.ndarray:
        """(N, classes) probabilities (or values, for linear heads), in batches."""
        x = tf.cast(x, tf.float32)
        return self.runner.squash(self.map_batches(self.runner.forward_fn, x)).numpy()


def _check_one_size(images: list | tuple, expected: tuple | None, name: str) -> None:
    """Images of different sizes cannot be one batch: one line naming the sizes found and
    the resize that makes them one (the model's input size where it has one)."""
    shapes = [getattr(im, "shape", None) for im in images]
    if len(images) < 2 or any(s is None or len(s) < 2 for s in shapes):
        return  # not a list of arrays: converting it says what is wrong
    if len({tuple(s) for s in shapes}) == 1:
        return
    h, w = (tuple(expected or ()) + (None, None))[:2]
    if h is not None and w is not None:
        size, why = f"({h}, {w})", f"the model's input size {h}x{w}"
    else:
        size, why = "(224, 224)", "one size, e.g. 224x224 (the model takes any)"
    raise InputError(
        f"`{name}` are {len(images)} images of different sizes ({describe_sizes(shapes)}); one "
        f"batch needs one size. Resize them to {why} first: "
        f"[keras.ops.image.resize(im, {size}) for im in {name}], or explain them one at a time."
    )


def check_images(
    images: Any, model: keras.Model, name: str = "images", input_index: int = 0
) -> tuple[tf.Tensor, bool]:
    """Validate images (an array, tensor or `tf.data.Dataset`) against the model's image
    input; return a float32 (N, H, W, C) tensor and whether a single image (H, W, C) was
    given."""
    expected = _expected_shape(model, input_index)
    if isinstance(images, tf.data.Dataset):
        images = as_source(images, model, input_index).elements.map(lambda x, _: x)
        images = list(images.as_numpy_iterator())
        if not images:
            raise InputError(f"The `{name}` dataset is empty: it yielded no images.")
        _check_one_size(images, expected, name)
        images = np.stack(images)
    elif isinstance(images, (list, tuple)):
        _check_one_size(images, expected, name)
    try:
        x = tf.convert_to_tensor(images)
    except (ValueError, TypeError) as err:
        raise InputError(f"`{name}` must be an array or tensor of images: {err}") from None
    if not (x.dtype.is_floating or x.dtype.is_integer):
        raise InputError(f"`{name}` must hold numbers. Received dtype {x.dtype.name}.")
    x = tf.cast(x, tf.float32)
    if expected is None:  # subclassed: any (H, W, C) images
        expected = (None, None, None)
    single = x.shape.rank == len(expected)
    if single:
        x = x[None]
    if x.shape.rank != len(expected) + 1:
        raise InputError(
            f"`{name}` must be one image of shape {expected} or a batch (N, *{expected}) "
            f"for model {model.name!r}. Received shape {tuple(x.shape)}."
        )
    check_image_shape(tuple(x.shape[1:]), expected, f"`{name}`", model, "tf.image.resize")
    if x.shape[0] == 0:
        raise InputError(f"`{name}` is empty: pass at least one image.")
    if not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise InputError(f"`{name}` contain NaN or infinite values.")
    return x, single


def check_targets(targets: Any, n: int, num_classes: int) -> np.ndarray:
    """Targets as (n,) int32; -1 means "the top class". Accepts None, an int or a sequence."""
    if targets is None:
        return np.full(n, -1, np.int32)
    t = np.asarray(targets)
    if not np.issubdtype(t.dtype, np.integer):
        raise InputError(f"`targets` must be class indices (ints). Received: {targets!r}.")
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,):
        raise InputError(
            f"`targets` must be one int or {n} ints (one per image). Received shape {t.shape}."
        )
    bad = t[(t < 0) | (t >= num_classes)]
    if bad.size:
        raise InputError(
            f"`targets` must be in [0, {num_classes - 1}] for a model with {num_classes} "
            f"outputs. Received: {bad.tolist()}."
        )
    return t.astype(np.int32)
