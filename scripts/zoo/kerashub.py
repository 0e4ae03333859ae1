"""Small, randomly initialised KerasHub (0.32) image classifiers, one per family.

For testing explainability code on real KerasHub architectures without
downloading weights: every model is built from its constructors (same
backbone/task/preprocessor classes as the presets, tiny widths and depths),
with random but seed-deterministic weights, and the family's
``ImageClassifierPreprocessor`` + ``ImageConverter`` attached (``scale`` /
``offset`` as the family's real presets set them, ``image_size`` = the model's
input size), so ``model.predict(raw_uint8_images_of_any_size)`` works and
``model(model.preprocessor(raw))`` is the plain forward pass.

    from scripts.zoo import kerashub
    model = kerashub.build("deit")              # 5 classes, 32x32 input
    model.predict(np.random.randint(0, 256, (2, 50, 70, 3), "uint8"))
    kerashub.describe("deit")

DINOv2 and DINOv3 have no classifier task in KerasHub 0.32 (only a backbone
and an image converter; the generic ``keras_hub.models.ImageClassifier`` pools
with ``GlobalAveragePooling2D`` and fails on their (batch, tokens, dim)
output). ``ViTImageClassifier`` accepts any backbone returning a token sequence
and its default ``pooling="token"`` takes token 0 (the class token), so the
DINO classifiers here are ``ViTImageClassifier(backbone=DINOV2Backbone(...))``
with a generic ``ImageClassifierPreprocessor(DINOV2ImageConverter(...))``:
backbone -> class token -> Dense("predictions").

The 18th entry is DINOv3 (class token + 4 register tokens, RoPE, custom
attention with no softmax layer), the newest ViT family in KerasHub 0.32.
"""

import keras
import keras_hub

# Normalisations of the real presets: x * scale + offset on 0..255 pixels.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = {
    "scale": [1.0 / 255.0 / s for s in _IMAGENET_STD],
    "offset": [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)],
}
HALF = {"scale": 1.0 / 127.5, "offset": -1.0}  # mean = std = 0.5
UNIT = {"scale": 1.0 / 255.0, "offset": 0.0}  # [0, 1]

_M = keras_hub.models
_L = keras_hub.layers


def _mnv5_arch():
    from keras_hub.src.models.mobilenetv5.mobilenetv5_builder import (
        convert_arch_def_to_stackwise,
    )

    # Same block grammar as timm's mobilenetv5_300m (er stem stage, then
    # universal inverted residuals interleaved with multi-query attention).
    return convert_arch_def_to_stackwise(
        [
            ["er_r1_k3_s2_e4_c16"],
            ["uir_r1_a3_k5_s2_e4_c24", "uir_r1_a3_k0_s1_e2_c24"],
            [
                "uir_r1_a5_k5_s2_e4_c32",
                "mqa_r1_k3_h2_v2_s1_d8_c32",
                "uir_r1_a0_k0_s1_e2_c32",
            ],
            ["uir_r1_a5_k5_s2_e4_c48", "mqa_r1_k3_h2_s1_d8_c48"],
        ]
    )


# Shared by the plain-ViT families: 8x8 patch grid at 32x32, 2 blocks, width 32.
_TINY_VIT = dict(patch_size=4, num_layers=2, num_heads=2, hidden_dim=32)

# One row per model. backbone/classifier/converter: class names in
# keras_hub.models / keras_hub.layers. size: default input size; shape_key:
# the backbone kwarg receiving (size, size, 3); stride: patch size or the
# backbone's total downsampling (for describe()). "about" is formatted with
# g = size // stride.
SPECS = {
    "vit": dict(
        family="ViT",
        backbone="ViTBackbone",
        kwargs=dict(_TINY_VIT, mlp_dim=64),
        classifier="ViTImageClassifier",
        converter="ViTImageConverter",
        norm=HALF,
        size=32,
        stride=4,
        about="1 class token + {g}x{g} patches; "
        "vit_encoder.transformer_block_{{1,2}} (ViTEncoderBlock: ln_1, keras "
        "MultiHeadAttention 'mha', ln_2, mlp); head on token 0",
    ),
    "deit": dict(
        family="DeiT",
        backbone="DeiTBackbone",
        kwargs=dict(_TINY_VIT, intermediate_dim=64),
        classifier="DeiTImageClassifier",
        converter="DeiTImageConverter",
        norm=IMAGENET,
        size=32,
        stride=4,
        about="class + distillation token + {g}x{g} patches; "
        "deit_encoder.transformer_block_{{1,2}} (DeiTEncoderBlock, keras "
        "MultiHeadAttention 'mha'); head on token 0 only",
    ),
    "dinov2": dict(
        family="DINOv2",
        backbone="DINOV2Backbone",
        kwargs=dict(_TINY_VIT, intermediate_dim=64, num_register_tokens=0),
        classifier="ViTImageClassifier",
        converter="DINOV2ImageConverter",
        norm=IMAGENET,
        size=32,
        stride=4,
        about="1 class token + {g}x{g} patches; encoder.layers_{{0,1}} (DINOV2Layer: "
        "DINOV2Attention wrapping keras MultiHeadAttention, layer scale); "
        "ViTImageClassifier head on token 0",
    ),
    "dinov2_registers": dict(
        family="DINOv2 with registers",
        backbone="DINOV2Backbone",
        kwargs=dict(_TINY_VIT, intermediate_dim=64, num_register_tokens=4),
        classifier="ViTImageClassifier",
        converter="DINOV2ImageConverter",
        norm=IMAGENET,
        size=32,
        stride=4,
        about="1 class token + 4 register tokens + {g}x{g} patches ([cls, reg x4, patches]); "
        "same blocks as dinov2",
    ),
    "dinov3": dict(
        family="DINOv3",
        backbone="DINOV3Backbone",
        kwargs=dict(_TINY_VIT, intermediate_dim=64, num_register_tokens=4),
        classifier="ViTImageClassifier",
        converter="DINOV3ImageConverter",
        norm=IMAGENET,
        size=32,
        stride=4,
        about="1 class token + 4 register tokens + {g}x{g} patches, RoPE; encoder.layers_{{0,1}} "
        "(DINOV3Layer: DINOV3Attention = q/k/v/o Dense + ops.nn.dot_product_attention)",
    ),
    "swin": dict(
        family="Swin Transformer",
        backbone="SwinTransformerBackbone",
        kwargs=dict(
            patch_size=4,
            embed_dim=16,
            depths=(2, 2),
            num_heads=(2, 4),
            window_size=4,
            drop_path=0.0,
        ),
        classifier="SwinTransformerImageClassifier",
        converter="SwinTransformerImageConverter",
        norm=IMAGENET,
        size=32,
        stride=8,
        about="no class token; {g}x{g} tokens at the end (2x patch merging); "
        "stage_{{0,1}}.blocks_{{0,1}} (SwinTransformerBlock + WindowAttention, 4x4 "
        "windows; blocks_1 of stage_0 is shifted, stage_1 is a single window so "
        "never shifted); head on the token mean",
    ),
    "mit": dict(
        family="MiT (SegFormer encoder)",
        backbone="MiTBackbone",
        kwargs=dict(
            layerwise_depths=[2, 2],
            num_layers=2,
            hidden_dims=[16, 32],
            layerwise_num_heads=[1, 2],
            layerwise_sr_ratios=[4, 2],
            max_drop_path_rate=0.0,
            layerwise_patch_sizes=[7, 3],
            layerwise_strides=[4, 2],
        ),
        classifier="MiTImageClassifier",
        converter="MiTImageConverter",
        norm=IMAGENET,
        size=32,
        stride=8,
        about="no class token; overlapping patch embeds, {g}x{g} map at the end; "
        "hierarchical_encoder_{{i}}_{{k}} (SegFormerMultiheadAttention with "
        "spatial reduction, MixFFN)",
    ),
    "cspnet": dict(
        family="CSPNet (CSPDarkNet)",
        backbone="CSPNetBackbone",
        kwargs=dict(
            stem_filters=16,
            stem_kernel_size=3,
            stem_strides=1,
            stackwise_depth=[1, 1, 2],
            stackwise_strides=2,
            stackwise_num_filters=[16, 24, 48],
            block_type="dark_block",
            stage_type="csp",
            down_growth=True,
            bottle_ratio=(0.5,) + (1.0,),
            block_ratio=(1.0,) + (0.5,),
            expand_ratio=(2.0,) + (1.0,),
            stem_padding="same",
        ),
        classifier="CSPNetImageClassifier",
        converter="CSPNetImageConverter",
        norm=IMAGENET,
        size=32,
        stride=8,
        about="CNN, {g}x{g} final map; 3 CSP stages of dark blocks (functional)",
    ),
    "densenet": dict(
        family="DenseNet",
        backbone="DenseNetBackbone",
        kwargs=dict(stackwise_num_repeats=[2, 2, 2], growth_rate=8, compression_ratio=0.5),
        classifier="DenseNetImageClassifier",
        converter="DenseNetImageConverter",
        norm=IMAGENET,
        size=32,
        stride=16,
        about="CNN, {g}x{g} final map; 3 dense stacks of 2 conv blocks + transitions (functional)",
    ),
    "efficientnet": dict(
        family="EfficientNet v1 (B0 layout, shallow)",
        backbone="EfficientNetBackbone",
        shape_key="input_shape",
        kwargs=dict(
            stackwise_width_coefficients=[0.25] * 4,
            stackwise_depth_coefficients=[1.0] * 4,
            stackwise_kernel_sizes=[3, 3, 5, 3],
            stackwise_num_repeats=[1, 2, 1, 2],
            stackwise_input_filters=[32, 16, 24, 40],
            stackwise_output_filters=[16, 24, 40, 80],
            stackwise_expansion_ratios=[1, 6, 6, 6],
            stackwise_squeeze_and_excite_ratios=[0.25] * 4,
            stackwise_strides=[1, 2, 2, 2],
            stackwise_block_types=["v1"] * 4,
            min_depth=None,
            use_depth_divisor_as_min_depth=True,
            cap_round_filter_decrease=True,
            dropout=0.0,
            num_features=128,
        ),
        classifier="EfficientNetImageClassifier",
        converter="EfficientNetImageConverter",
        norm=IMAGENET,
        size=32,
        stride=16,
        about="CNN, {g}x{g} final map; 'v1' MBConv blocks with squeeze-excite, inlined into "
        "the functional graph (block1a_..., block2b_...)",
    ),
    "efficientnetv2": dict(
        family="EfficientNet v2 (fused MBConv)",
        backbone="EfficientNetBackbone",
        shape_key="input_shape",
        kwargs=dict(
            stackwise_width_coefficients=[0.5] * 4,
            stackwise_depth_coefficients=[1.0] * 4,
            stackwise_kernel_sizes=[3, 3, 3, 3],
            stackwise_num_repeats=[1, 2, 2, 2],
            stackwise_input_filters=[24, 24, 48, 64],
            stackwise_output_filters=[24, 48, 64, 128],
            stackwise_expansion_ratios=[1, 4, 4, 4],
            stackwise_squeeze_and_excite_ratios=[0, 0, 0, 0.25],
            stackwise_strides=[1, 2, 2, 2],
            stackwise_block_types=["fused"] * 3 + ["unfused"],
            stackwise_force_input_filters=[0] * 4,
            stackwise_nores_option=[False] * 4,
            dropout=0.0,
            num_features=128,
        ),
        classifier="EfficientNetImageClassifier",
        converter="EfficientNetImageConverter",
        norm=IMAGENET,
        size=32,
        stride=16,
        about="CNN, {g}x{g} final map; FusedMBConvBlock x5 then MBConvBlock x2, each one "
        "subclassed layer (block1a_ ... block4b_)",
    ),
    "hgnetv2": dict(
        family="HGNetV2",
        backbone="HGNetV2Backbone",
        kwargs=dict(
            depths=[1, 1, 1],
            embedding_size=16,
            hidden_sizes=[32, 48, 64],
            stem_channels=[3, 8, 16],
            hidden_act="relu",
            use_learnable_affine_block=True,
            stackwise_stage_filters=[
                [16, 8, 32, 1, 2, 3],
                [32, 16, 48, 1, 2, 3],
                [48, 24, 64, 1, 2, 5],
            ],
            apply_downsample=[False, True, True],
            use_lightweight_conv_block=[False, False, True],
        ),
        classifier="HGNetV2ImageClassifier",
        converter="HGNetV2ImageConverter",
        norm=IMAGENET,
        size=32,
        stride=16,
        about="CNN, {g}x{g} final map; whole net = 2 subclassed layers 'embedder' + 'encoder' "
        "(HGNetV2Encoder -> stages -> HG blocks); backbone returns a dict of stage maps",
    ),
    "mobilenetv3": dict(
        family="MobileNetV3 (small layout)",
        backbone="MobileNetBackbone",
        kwargs=dict(
            stackwise_expansion=[[16, 24], [32, 48], [48, 64]],
            stackwise_num_blocks=[2, 2, 2],
            stackwise_num_filters=[[8, 8], [16, 16], [24, 24]],
            stackwise_kernel_size=[[3, 3], [5, 5], [5, 5]],
            stackwise_num_strides=[[2, 1], [2, 1], [2, 1]],
            stackwise_se_ratio=[[None, None], [0.25, 0.25], [0.25, 0.25]],
            stackwise_activation=[
                ["relu", "relu"],
                ["hard_swish", "hard_swish"],
                ["hard_swish", "hard_swish"],
                ["hard_swish"],
            ],
            stackwise_padding=[[1, 1], [2, 2], [2, 2]],
            output_num_filters=64,
            input_num_filters=8,
            depthwise_filters=8,
            depthwise_stride=2,
            depthwise_residual=False,
            squeeze_and_excite=0.5,
            last_layer_filter=48,
            input_activation="hard_swish",
            output_activation="hard_swish",
        ),
        classifier="MobileNetImageClassifier",
        head=dict(num_features=64),
        converter="MobileNetImageConverter",
        norm=IMAGENET,
        size=64,
        stride=32,
        about="CNN, {g}x{g} final map; inverted residual blocks with squeeze-excite, functional; "
        "head = GAP -> 1x1 conv -> Dense",
    ),
    "mobilenetv5": dict(
        family="MobileNetV5 (Gemma 3n vision encoder)",
        backbone="MobileNetV5Backbone",
        kwargs=dict(
            stem_size=16,
            num_features=64,
            norm_layer="rms_norm",
            act_layer="gelu",
            use_msfa=True,
            msfa_indices=(-2, -1),
            msfa_output_resolution=4,
            layer_scale_init_value=1e-5,
        ),
        arch=_mnv5_arch,
        classifier="MobileNetV5ImageClassifier",
        converter="MobileNetV5ImageConverter",
        norm=UNIT,
        size=64,
        stride=16,
        about="conv+attention hybrid, {g}x{g} final map (multi-scale fusion adapter); "
        "EdgeResidual, UniversalInvertedResidual, MobileAttention (multi-query, "
        "strided kv) blocks; Dense named 'classifier'",
    ),
    "resnet": dict(
        family="ResNet v1 (basic blocks)",
        backbone="ResNetBackbone",
        kwargs=dict(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 64, 64],
            stackwise_num_blocks=[2, 2, 2],
            stackwise_num_strides=[1, 2, 2],
            block_type="basic_block",
            use_pre_activation=False,
        ),
        classifier="ResNetImageClassifier",
        converter="ResNetImageConverter",
        norm=IMAGENET,
        size=32,
        stride=16,
        about="CNN, {g}x{g} final map; basic blocks, post-activation (functional)",
    ),
    "resnetv2": dict(
        family="ResNet v2 (pre-activation bottlenecks)",
        backbone="ResNetBackbone",
        kwargs=dict(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 32, 32],
            stackwise_num_blocks=[2, 2, 2],
            stackwise_num_strides=[1, 2, 2],
            block_type="bottleneck_block",
            use_pre_activation=True,
        ),
        classifier="ResNetImageClassifier",
        converter="ResNetImageConverter",
        norm=IMAGENET,
        size=32,
        stride=16,
        about="CNN, {g}x{g} final map; bottleneck blocks, pre-activation + final "
        "post_bn (functional)",
    ),
    "vgg": dict(
        family="VGG",
        backbone="VGGBackbone",
        kwargs=dict(stackwise_num_repeats=[1, 1, 2], stackwise_num_filters=[8, 16, 32]),
        classifier="VGGImageClassifier",
        head=dict(pooling_hidden_dim=32),
        converter="VGGImageConverter",
        norm=IMAGENET,
        size=56,
        stride=8,
        about="CNN, {g}x{g} final map (>= 7: the preset head starts with a 7x7 valid conv); "
        "3 conv stacks; head is a keras.Sequential 'head' (fc1 conv7, fc2 conv1, "
        "pooler, predictions)",
    ),
    "xception": dict(
        family="Xception",
        backbone="XceptionBackbone",
        kwargs=dict(
            stackwise_conv_filters=[
                [8, 16],
                [32, 32],
                [64, 64],
                [64, 64, 64],
                [64, 128],
                [128, 256],
            ],
            stackwise_pooling=[False, True, True, False, True, False],
        ),
        classifier="XceptionImageClassifier",
        converter="XceptionImageConverter",
        norm=HALF,
        size=64,
        stride=16,
        about="CNN, {g}x{g} final map (valid stem convs); separable-conv blocks with "
        "1x1 residual convs (functional)",
    ),
}

NAMES = tuple(SPECS)


def image_size(name):
    """Default (square) input size of `name`'s backbone and converter."""
    return SPECS[name]["size"]


def describe(name, size=None):
    """One line: family, tokens / final grid, which blocks."""
    spec = SPECS[name]
    g = (size or spec["size"]) // spec["stride"]
    return f"{spec['family']}: " + spec["about"].format(g=g)


def build(name, num_classes=5, image_size=None, preprocessor=True, seed=0):
    """The KerasHub classifier `name` with random weights drawn from `seed`.

    `image_size` (default `image_size(name)`) is the backbone's input size and
    the converter's resize target. With `preprocessor=True` the family's
    `ImageClassifierPreprocessor` is attached (resize + scale/offset), so
    `predict` takes raw 0..255 images of any size; `model(x)` always takes
    preprocessed float images of shape (batch, size, size, 3). Outputs are
    logits (activation=None, as in the presets). `predict` preprocesses in
    tf.data and `model.preprocessor(x)` eagerly; their resizes differ slightly
    (logits agree to ~1e-2), so preprocess once when comparing numbers.
    """
    spec = SPECS[name]
    size = image_size or spec["size"]
    keras.utils.set_random_seed(seed)
    kwargs = dict(spec["kwargs"])
    if "arch" in spec:
        kwargs.update(spec["arch"]())
    kwargs[spec.get("shape_key", "image_shape")] = (size, size, 3)
    if spec["backbone"] == "DINOV2Backbone":
        # Train-time position grid = input grid: no interpolation needed.
        kwargs["position_embedding_shape"] = (size, size, 3)
    backbone = getattr(_M, spec["backbone"])(**kwargs)

    pre = None
    if preprocessor:
        converter = getattr(_L, spec["converter"])(image_size=(size, size), **spec["norm"])
        task_cls = getattr(_M, spec["classifier"])
        # DINO backbones borrow ViTImageClassifier; give them the generic
        # preprocessor around their own converter.
        if spec["classifier"] == "ViTImageClassifier" and name != "vit":
            pre_cls = keras_hub.models.ImageClassifierPreprocessor
        else:
            pre_cls = task_cls.preprocessor_cls
        pre = pre_cls(image_converter=converter)
    return getattr(_M, spec["classifier"])(
        backbone=backbone,
        num_classes=num_classes,
        preprocessor=pre,
        **spec.get("head", {}),
    )
