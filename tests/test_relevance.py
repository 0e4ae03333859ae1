"""LRP and DeepLIFT: the identities they must satisfy, on small models built here."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras import explain
from xai_keras.errors import InputError
from xai_keras.explainers.base import runner_for

L = keras.layers
RULES = ["composite", "0", "epsilon", "gamma", "zplus", "alpha2beta1", "flat", "wsquare"]


def _init(bias: bool):
    return "random_normal" if bias else "zeros"


def _plain_net(bias: bool = True, act: str = "relu", seed: int = 0) -> keras.Model:
    """Conv -> max pool -> conv -> GAP -> dense -> dense(softmax)."""
    keras.utils.set_random_seed(seed)
    b = _init(bias)
    x = inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, padding="same", activation=act, bias_initializer=b)(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(8, 3, activation=act, bias_initializer=b)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(8, activation=act, bias_initializer=b)(x)
    return keras.Model(inputs, L.Dense(4, activation="softmax", bias_initializer=b)(x))


def _bn(x, bias: bool, name: str):
    bn = L.BatchNormalization(name=name)
    y = bn(x)
    rng = np.random.default_rng(len(name))
    c = bn.gamma.shape[0]
    bn.gamma.assign(rng.uniform(0.5, 1.5, c))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, c))
    if bias:
        bn.beta.assign(rng.normal(0, 0.3, c))
        bn.moving_mean.assign(rng.normal(0, 0.3, c))
    return y


def _residual_net(bias: bool = True, pool: str = "max", seed: int = 1) -> keras.Model:
    """Conv-BN-ReLU stem, a residual block (Add), depthwise and separable convs,
    Concatenate, pooling, a nested Sequential dense head."""
    keras.utils.set_random_seed(seed)
    b = _init(bias)
    x = inputs = keras.Input((12, 12, 3))
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(8, 3, use_bias=bias, bias_initializer=b)(x)
    x = L.ReLU()(_bn(x, bias, "bn_stem"))
    y = L.Conv2D(8, 3, padding="same", bias_initializer=b)(x)
    y = _bn(y, bias, "bn_block")
    x = L.Activation("relu")(L.Add()([x, y]))
    x = L.MaxPooling2D()(x) if pool == "max" else L.AveragePooling2D(2)(x)
    d = L.DepthwiseConv2D(3, padding="same", activation="relu", bias_initializer=b)(x)
    s = L.SeparableConv2D(4, 3, padding="same", activation="relu", bias_initializer=b)(x)
    x = L.Concatenate()([d, s])
    x = L.Flatten()(L.Dropout(0.3)(x))
    head = keras.Sequential(
        [L.Dense(8, activation="relu", bias_initializer=b), L.Dense(4, bias_initializer=b)]
    )
    return keras.Model(inputs, L.Softmax()(head(x)))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (3, 12, 12, 3)).astype(np.float32)


def _grad_x_input(model, x, targets):
    grads, logits, t = runner_for(model).input_grads_fn(tf.constant(x), tf.constant(targets))
    return x * grads.numpy(), logits.numpy(), t.numpy()


def _target_logits(exp) -> np.ndarray:
    return np.take_along_axis(exp.logits, exp.targets[:, None], 1)[:, 0]


# -- LRP ------------------------------------------------------------------------------------
@pytest.mark.parametrize("net", [_plain_net, _residual_net])
@pytest.mark.parametrize("rule, options", [("0", {}), ("epsilon", {"epsilon": 1e-9})])
def test_lrp0_equals_gradient_times_input(images, net, rule, options):
    """LRP-0 (and epsilon -> 0) is gradient x input on ReLU nets, biases included, per
    pixel; also through BN (folded), Add, max pooling, depthwise/separable convs, a nested
    model and a skipped softmax."""
    model = net(bias=True)
    exp = explain(model, images, method="lrp", rule=rule, targets=[0, 1, 2], **options)
    gxi, logits, _ = _grad_x_input(model, images, np.array([0, 1, 2], np.int32))
    np.testing.assert_allclose(exp.logits, logits, rtol=1e-5, atol=1e-6)
    scale = np.abs(gxi).max()
    tol = (1e-5 if rule == "0" else 1e-4) * scale  # epsilon: units with |z| ~ 1e-5 move
    np.testing.assert_allclose(exp.attributions, gxi, atol=tol)
    np.testing.assert_allclose(exp.raw, gxi.sum(-1), atol=tol)


CONSERVING = [r for r in RULES if r not in ("zplus", "alpha2beta1")]


@pytest.mark.parametrize(
    "net, rule",
    [(n, r) for n in (_plain_net, _residual_net) for r in CONSERVING] + [(_plain_net, "zplus")],
)
def test_lrp_conservation_without_biases(images, net, rule):
    """With zero biases (BN: zero mean and beta) relevance sums to the explained logit.

    Alpha-beta conserves only where every unit has contributions of both signs (z+ and z-
    non-zero): a unit whose contributions are all negative loses its relevance under z+, and
    under alpha2beta1 gets -beta times it (as in zennit). The residual branch, which is added
    before its ReLU, has such units, so z+ is checked on the plain net only."""
    model = net(bias=False)
    exp = explain(model, images, method="lrp", rule=rule, epsilon=1e-6)
    y = _target_logits(exp)
    np.testing.assert_allclose(exp.attributions.sum(axis=(1, 2, 3)), y, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("net", [_plain_net, _residual_net])
def test_zplus_relevance_is_non_negative(images, net):
    model = net(bias=False)
    exp = explain(model, images, method="lrp", rule="zplus")
    y = _target_logits(exp)
    assert (y > 0).all()  # top-class logits of these nets
    assert exp.attributions.min() >= -1e-6 * np.abs(exp.attributions).max()
    assert (exp.attributions > 0).mean() > 0.3


def test_lrp_rules_differ_and_composite_is_default(images):
    model = _residual_net(bias=True)
    default = explain(model, images, method="lrp")
    composite = explain(model, images, method="lrp", rule="composite")
    np.testing.assert_array_equal(default.attributions, composite.attributions)
    for rule in ("gamma", "zplus", "flat"):
        other = explain(model, images, method="lrp", rule=rule).attributions
        assert not np.allclose(other, default.attributions)


def test_flat_rule_spreads_evenly_on_a_single_dense_layer():
    """Flat on a lone Dense (the input layer): every input gets 1/n of each output's share."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Flatten(), L.Dense(3)])
    x = np.random.default_rng(1).uniform(0, 1, (2, 4, 4, 1)).astype(np.float32)
    exp = explain(model, x, method="lrp", rule="flat", targets=[1, 2])
    y = _target_logits(exp)
    np.testing.assert_allclose(
        exp.attributions, np.broadcast_to(y[:, None, None, None] / 16, x.shape), rtol=1e-4
    )


def test_lrp_refuses_unsupported_layers(images):
    x = inputs = keras.Input((12, 12, 3))
    x = L.GroupNormalization(2)(L.Conv2D(4, 3)(x))
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    with pytest.raises(InputError, match="GroupNormalization") as err:
        explain(model, images, method="lrp")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="GroupNormalization"):
        explain(model, images, method="deeplift")


def test_lrp_unknown_rule(images):
    with pytest.raises(InputError, match="rule"):
        explain(_plain_net(), images, method="lrp", rule="bogus")


# -- DeepLIFT -------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_deeplift_zero_baseline_equals_epsilon_lrp(images, act):
    """Ancona et al. (ICLR 2018, Prop. 3): DeepLIFT-rescale with a zero baseline equals
    epsilon-LRP (epsilon -> 0) when the network has no additive biases and every activation
    has f(0) = 0 (ReLU, tanh): then every reference activation is 0 and each multiplier is
    f(z)/z, LRP's pass-through ratio. Max pooling takes its gradient in both."""
    model = _plain_net(bias=False, act=act)
    d = explain(model, images, method="deeplift", baseline=0.0, targets=[0, 1, 3])
    e = explain(model, images, method="lrp", rule="epsilon", epsilon=1e-9, targets=[0, 1, 3])
    scale = np.abs(e.attributions).max()
    np.testing.assert_allclose(d.attributions, e.attributions, atol=1e-5 * scale)


@pytest.mark.parametrize("baseline", ["black", "blur", 0.5])
def test_deeplift_summation_to_delta(images, baseline):
    """Attributions sum to f(x) - f(x0) (biases, BN, residual Add, tanh-free ReLU net with
    average pooling: every nonlinearity element-wise)."""
    model = _residual_net(bias=True, pool="avg")
    exp = explain(model, images, method="deeplift", baseline=baseline)
    runner = runner_for(model)
    from xai_keras.explainers.baselines import make_baseline

    x0 = make_baseline(tf.constant(images), baseline).numpy()
    f0 = np.take_along_axis(runner.forward_fn(x0).numpy(), exp.targets[:, None], 1)[:, 0]
    delta = _target_logits(exp) - f0
    np.testing.assert_allclose(exp.attributions.sum(axis=(1, 2, 3)), delta, rtol=1e-4, atol=1e-5)


def test_deeplift_differs_from_gradient_times_input_with_biases(images):
    model = _residual_net(bias=True, pool="avg")
    d = explain(model, images, method="deeplift", baseline="blur").attributions
    gxi, _, _ = _grad_x_input(model, images, np.full(3, -1, np.int32))
    assert not np.allclose(d, gxi, atol=1e-4 * np.abs(gxi).max())


def test_relevance_maps_are_signed(images):
    model = _residual_net(bias=True)
    exp = explain(model, images, method="lrp")
    assert exp.raw.min() < 0 < exp.raw.max()
    np.testing.assert_allclose(exp.raw, exp.attributions.sum(-1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value_range", [(0, 1), (-1, 1)])
def test_zbox_bounds_from_the_value_range(images, value_range):
    """The composite's z^B uses the model's value range; relevance is still conserved."""
    model = _residual_net(bias=False)
    x = images if value_range == (0, 1) else images * 2 - 1
    exp = explain(model, x, method="lrp", value_range=value_range)
    own = explain(model, x, method="lrp")  # bounds: each image's min and max
    y = _target_logits(exp)
    np.testing.assert_allclose(exp.attributions.sum(axis=(1, 2, 3)), y, rtol=2e-3, atol=1e-5)
    assert not np.allclose(exp.attributions, own.attributions)


def test_signed_methods_are_drawn_with_a_diverging_colormap(images):
    """Red for positive relevance, blue for negative; unsigned methods keep JET."""
    model = _residual_net(bias=True)
    exp = explain(model, images, method="lrp")
    assert exp.signed
    signed = exp.signed_maps()
    assert signed.shape == exp.maps.shape and signed.min() < 0 < signed.max()
    heat = exp.heatmaps().astype(int)
    i = np.unravel_index(signed.argmax(), signed.shape)
    j = np.unravel_index(signed.argmin(), signed.shape)
    assert heat[i][0] > heat[i][2] and heat[j][2] > heat[j][0]  # red vs blue
    assert exp.overlay().shape == (*exp.maps.shape, 3)
    assert not explain(model, images, method="saliency").signed


@pytest.mark.parametrize("method", ["lrp", "deeplift"])
def test_same_maps_through_explain_dataset(gap_model, images32, tmp_path, method):
    """The compiled, distributed dataset path gives the maps `explain` gives."""
    from xai_keras.scale import explain_dataset

    reference = explain(gap_model, images32, method=method, batch_size=4)
    ds = tf.data.Dataset.from_tensor_slices(images32).batch(3)
    result = explain_dataset(gap_model, ds, method, out=tmp_path / "run")
    np.testing.assert_allclose(result.maps[:], reference.maps, atol=1e-3)  # float16 storage
    np.testing.assert_array_equal(result.targets, reference.targets)


# -- composite layers, gates, padding, norms, attention (bias-free twins conserve) ----------
def _scale_bn(bn: L.BatchNormalization) -> None:
    """Random scale and variance, zero mean and shift: linear without an offset, so a
    bias-free net stays bias-free."""
    rng = np.random.default_rng(5)
    c = bn.gamma.shape[0]
    bn.gamma.assign(rng.uniform(0.5, 1.5, c))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, c))


class _FusedBlock(L.Layer):
    """A FusedMBConv-like composite layer: its `call` pads with `ops.pad`, runs a conv, BN and
    SiLU, a squeeze-excitation whose gate multiplies in Python, a projection conv, and adds
    the residual with `+` (none of which is a node of the model's graph)."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(channels * 2, 3, use_bias=False, name="expand")
        self.bn = L.BatchNormalization(name="fused_bn")
        self.act = L.Activation("silu")
        self.se_reduce = L.Conv2D(2, 1, activation="relu", use_bias=False, name="se_reduce")
        self.se_expand = L.Conv2D(channels * 2, 1, activation="sigmoid", use_bias=False)
        self.project = L.Conv2D(channels, 1, use_bias=False, name="project")

    def call(self, x):
        y = keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        y = self.act(self.bn(self.conv(y)))
        gate = self.se_expand(self.se_reduce(keras.ops.mean(y, axis=(1, 2), keepdims=True)))
        return x + self.project(y * gate)


def _se(x, channels: int, name: str):
    """Squeeze-excitation in the graph: GAP -> Dense ReLU -> Dense sigmoid -> Multiply."""
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Dense(2, activation="relu", use_bias=False, name=f"{name}_reduce")(s)
    s = L.Dense(channels, activation="sigmoid", use_bias=False, name=f"{name}_gate")(s)
    return L.Multiply(name=f"{name}_excite")([x, s])


def _se_net(seed: int = 2) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", use_bias=False)(x)
    x = _se(x, 6, "se")
    x = L.Conv2D(8, 3, activation="relu", use_bias=False)(x)
    return keras.Model(inputs, L.Dense(4, use_bias=False)(L.GlobalAveragePooling2D()(x)))


def _fused_net(seed: int = 3) -> keras.Model:
    """Padding as a layer and as a graph op, a composite block, a split and a concatenation."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((12, 12, 3))
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(6, 3, strides=2, use_bias=False)(x)
    x = keras.ops.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]])
    x = L.Conv2D(6, 2, activation="swish", use_bias=False)(x)
    block = _FusedBlock(6, name="fused")
    x = block(x)
    a, b = keras.ops.split(x, 2, axis=-1)
    x = L.Concatenate()([L.ReLU()(a), b])
    _scale_bn(block.bn)
    return keras.Model(inputs, L.Dense(4, use_bias=False)(L.GlobalAveragePooling2D()(x)))


def _token_net(seed: int = 4) -> keras.Model:
    """A bias-free transformer block: patch conv, LayerNorm (no shift), attention, GELU MLP."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, strides=3, use_bias=False)(x)
    x = L.Reshape((16, 8))(x)
    h = L.LayerNormalization(center=False)(x)
    h = L.MultiHeadAttention(2, 4, use_bias=False)(h, h)
    x = L.Add()([x, h])
    h = L.LayerNormalization(center=False)(x)
    h = L.Dense(8, activation="gelu", use_bias=False)(L.Dense(16, use_bias=False)(h))
    x = L.Add()([x, h])
    return keras.Model(inputs, L.Dense(4, use_bias=False)(L.GlobalAveragePooling1D()(x)))


@pytest.mark.parametrize("net", [_se_net, _fused_net, _token_net])
@pytest.mark.parametrize("rule", ["0", "epsilon", "composite"])
def test_lrp_conservation_through_gates_composites_padding_and_norms(images, net, rule):
    """Bias-free twins of a squeeze-excitation block, a FusedMBConv-like composite layer (its
    Python padding, product and residual sum), padded convs, Split/Concatenate, LayerNorm and
    attention: the input relevance sums to the explained logit. Gates, the norms' standard
    deviation and the attention weights are constants, so every stage is linear in the
    relevance it passes on."""
    model = net()
    exp = explain(model, images, method="lrp", rule=rule, epsilon=1e-9)
    y = _target_logits(exp)
    assert np.abs(y).min() > 1e-4
    assert np.isfinite(exp.attributions).all()
    np.testing.assert_allclose(exp.attributions.sum(axis=(1, 2, 3)), y, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("rule", ["epsilon", "composite"])
def test_squeeze_excitation_gate_is_a_constant(images, rule):
    """LRP of the SE net equals LRP of its twin in which the gate is frozen at its value for
    that image (a 1x1 depthwise conv with the gate as weights): relevance flows only through
    the gated signal, none through the gate's branch."""
    model = _se_net()
    gate_of = keras.Model(model.inputs, model.get_layer("se_gate").output)
    opts = {"rule": rule, "epsilon": 1e-9}  # no epsilon absorption at the frozen gate
    exp = explain(model, images, method="lrp", targets=[0, 1, 2], **opts)
    for i, image in enumerate(images):
        gate = gate_of(tf.constant(image[None])).numpy().reshape(1, 1, -1, 1)
        x = inputs = keras.Input((12, 12, 3))
        conv = model.layers[1]
        x = L.Conv2D(6, 3, padding="same", activation="relu", use_bias=False)(x)
        frozen = L.DepthwiseConv2D(1, use_bias=False)
        x = frozen(x)
        x = L.Conv2D(8, 3, activation="relu", use_bias=False)(x)
        twin = keras.Model(inputs, L.Dense(4, use_bias=False)(L.GlobalAveragePooling2D()(x)))
        twin.layers[1].set_weights(conv.get_weights())
        frozen.set_weights([gate])
        twin.layers[3].set_weights(model.layers[-3].get_weights())
        twin.layers[-1].set_weights(model.layers[-1].get_weights())
        ref = explain(twin, image[None], method="lrp", targets=[i], **opts)
        np.testing.assert_allclose(ref.logits[0], exp.logits[i], rtol=1e-5, atol=1e-6)
        scale = np.abs(ref.attributions).max()
        np.testing.assert_allclose(exp.attributions[i], ref.attributions[0], atol=1e-5 * scale)


def test_deeplift_reaches_composite_layers(images):
    """DeepLIFT runs the same rules table: composite blocks, gates and attention work."""
    for net in (_fused_net, _token_net, _se_net):
        exp = explain(net(), images, method="deeplift", baseline=0.0)
        assert np.isfinite(exp.attributions).all() and np.abs(exp.attributions).max() > 0


def test_lrp_refusals_name_the_sublayer_and_the_product(images):
    """A composite layer's sublayer without a rule is named by its path; a product of two
    full-size signals (no gate) is refused with the reason."""

    class Block(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = L.GroupNormalization(2, name="gn")

        def call(self, x):
            return self.norm(x)

    x = inputs = keras.Input((12, 12, 3))
    x = Block(name="block")(L.Conv2D(4, 3)(x))
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    with pytest.raises(InputError, match="'block/gn' of type GroupNormalization"):
        explain(model, images, method="lrp")

    x = inputs = keras.Input((12, 12, 3))
    a, b = L.Conv2D(4, 3)(x), L.Conv2D(4, 3)(x)
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(L.Multiply()([a, b]))))
    with pytest.raises(InputError, match="product of two full-size signals"):
        explain(model, images, method="lrp")


def test_rule_table_is_open_to_other_methods():
    """The rules live in one table keyed by layer type (or class name), which another
    relevance method extends for its own layers."""
    from xai_keras.explainers.relevance import LAYER_RULES, rule_kind

    assert rule_kind(L.Conv2D(2, 1)) == "weighted"
    assert rule_kind(L.LayerNormalization()) == "norm"
    assert rule_kind(L.Multiply()) == "gate"
    assert rule_kind(L.GroupNormalization(2)) is None
    rules = {**LAYER_RULES, L.GroupNormalization: "norm"}
    assert rule_kind(L.GroupNormalization(2), rules) == "norm"
