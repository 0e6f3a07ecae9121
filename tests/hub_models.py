"""Small keras-hub backbones built from their constructors, as 10-class classifiers.

Random weights, no network (never `from_preset`). Each builder returns a functional model
`Input -> backbone -> pooling -> Dense(10)` (logits): images `(N, 32, 32, 3)` float32 (a few
backbones need another side, `IMAGE_SIDES`), tokens `(N, SEQUENCE_LENGTH)` int32 for the text
backbone. Shared by `tests/test_keras_hub.py` and `benchmarks/keras_hub_zoo.py` (one registry,
`BACKBONES`); the sizes are those of keras-hub's own backbone tests, cut down to train in a
second on a CPU.
"""

import keras
import keras_hub
import numpy as np

NUM_CLASSES = 10
SIDE = 32
SEQUENCE_LENGTH = 8
VOCABULARY_SIZE = 50


def classifier(backbone, inputs, backbone_inputs=None, features=None):
    """`inputs -> backbone -> global average pooling -> Dense(NUM_CLASSES)`.

    Args:
        backbone: a keras-hub `Backbone` (a functional model).
        inputs: the classifier's `keras.Input`.
        backbone_inputs: what the backbone is called on, built from `inputs` (None: `inputs`).
        features: the key of the backbone's output dict to pool (None: its only output).
    """
    x = backbone(inputs if backbone_inputs is None else backbone_inputs)
    if features is not None:
        x = x[features]
    pool = (
        keras.layers.GlobalAveragePooling2D
        if len(x.shape) == 4
        else keras.layers.GlobalAveragePooling1D
    )
    x = pool(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(x))


def _image_classifier(backbone_class, side=SIDE, features=None, **kwargs):
    images = keras.Input((side, side, 3), name="images")
    backbone = backbone_class(image_shape=(side, side, 3), **kwargs)
    # DINOv2/v3 name their one input in a dict.
    names = list(backbone.input) if isinstance(backbone.input, dict) else []
    backbone_inputs = {names[0]: images} if names else None
    return classifier(backbone, images, backbone_inputs, features=features)


def resnet_v1():
    """ResNet-18-style basic blocks, post-activation (keras-hub's ResNet v1)."""
    return _resnet("basic_block", use_pre_activation=False)


def resnet_v2():
    """Pre-activation ResNet (v2): its stem pads with a raw `keras.ops.pad`."""
    return _resnet("basic_block", use_pre_activation=True)


def resnet_vd():
    """ResNet-vd bottleneck blocks (average-pool shortcuts)."""
    return _resnet("bottleneck_block_vd", use_pre_activation=False)


def _resnet(block_type, use_pre_activation):
    return _image_classifier(
        keras_hub.models.ResNetBackbone,
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32, 64],  # keras-hub requires 64 in the first stack
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type=block_type,
        use_pre_activation=use_pre_activation,
    )


def mobilenet_v3():
    """MobileNetV3: blocks as custom layers (ConvBnActBlock, InvertedResidualBlock, ...)."""
    return _image_classifier(
        keras_hub.models.MobileNetBackbone,
        stackwise_expansion=[[32, 48], [64, 96]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"], ["hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=64,
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=16,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        squeeze_and_excite=0.5,
        last_layer_filter=96,
    )


def efficientnet_v1():
    """EfficientNet (v1 MBConv blocks with squeeze-and-excitation)."""
    return _efficientnet(["v1"] * 3, se_ratios=[0.25] * 3)


def efficientnet_v2():
    """EfficientNetV2: fused MBConv blocks, then MBConv with squeeze-and-excitation."""
    return _efficientnet(["fused", "fused", "unfused"], se_ratios=[0.0, 0.0, 0.25])


def _efficientnet(block_types, se_ratios):
    images = keras.Input((SIDE, SIDE, 3), name="images")
    backbone = keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 2, 2],
        stackwise_input_filters=[16, 16, 24],
        stackwise_output_filters=[16, 24, 32],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=se_ratios,
        stackwise_strides=[1, 2, 2],
        stackwise_block_types=block_types,
        stackwise_force_input_filters=[0] * 3,
        stackwise_nores_option=[False] * 3,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        num_features=64,
        input_shape=(SIDE, SIDE, 3),
    )
    return classifier(backbone, images)


def cspnet():
    """CSPNet (CSPDarkNet stages): `keras.ops.split` of the channels in each stage."""
    return _image_classifier(
        keras_hub.models.CSPNetBackbone,
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_strides=2,
        stackwise_depth=[1, 1, 2],
        stackwise_num_filters=[16, 24, 32],
        down_growth=True,
        bottle_ratio=(0.5,) + (1.0,),
        block_ratio=(1.0,) + (0.5,),
        expand_ratio=(2.0,) + (1.0,),
        block_type="dark_block",
        stage_type="csp",
        stem_padding="same",
    )


def hgnetv2():
    """HGNetV2: stem, stages and their blocks as custom layers."""
    stage_filters = [[16, 8, 32, 1, 1, 3], [32, 16, 64, 1, 1, 3]]
    return _image_classifier(
        keras_hub.models.HGNetV2Backbone,
        side=64,
        depths=[1, 1],
        embedding_size=16,
        hidden_sizes=[stage[2] for stage in stage_filters],
        stem_channels=[3, 8, 16],
        hidden_act="relu",
        use_learnable_affine_block=False,
        stackwise_stage_filters=stage_filters,
        apply_downsample=[False, True],
        use_lightweight_conv_block=[False, True],
        out_features=["stage2"],
        features="stage2",
    )


def densenet():
    """DenseNet: concatenations of growing width."""
    return _image_classifier(
        keras_hub.models.DenseNetBackbone,
        stackwise_num_repeats=[2, 2, 2],
        compression_ratio=0.5,
        growth_rate=8,
    )


def vgg():
    """VGG: plain conv stacks."""
    return _image_classifier(
        keras_hub.models.VGGBackbone,
        stackwise_num_repeats=[2, 2, 2],
        stackwise_num_filters=[16, 32, 32],
    )


def xception():
    """Xception: separable convs and strided residual convs."""
    return _image_classifier(
        keras_hub.models.XceptionBackbone,
        stackwise_conv_filters=[[16, 32], [48, 48], [64, 64]],
        stackwise_pooling=[False, True, False],
    )


def mobilenet_v5():
    """MobileNetV5 (Gemma 3n's vision tower): edge residual and universal inverted blocks."""
    return _image_classifier(
        keras_hub.models.MobileNetV5Backbone,
        stackwise_block_types=[["er"], ["uir", "uir"]],
        stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[24], [48, 48]],
        stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]],
        stackwise_exp_ratios=[[4.0], [4.0, 4.0]],
        stackwise_se_ratios=[[0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [5, 5]],
        stackwise_dw_start_kernel_sizes=[[0], [0, 0]],
        stackwise_dw_end_kernel_sizes=[[0], [0, 0]],
        stackwise_exp_kernel_sizes=[[3], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0]],
        stackwise_num_heads=[[0], [0, 0]],
        stackwise_key_dims=[[0], [0, 0]],
        stackwise_value_dims=[[0], [0, 0]],
        stackwise_kv_strides=[[0], [0, 0]],
        stackwise_use_cpe=[[False], [False, False]],
        stem_size=16,
        num_features=64,
        use_msfa=False,
    )


def mit():
    """MiT (SegFormer's encoder): overlapping patch embeddings and efficient attention."""
    return _image_classifier(
        keras_hub.models.MiTBackbone,
        layerwise_depths=[1, 1],
        hidden_dims=[16, 32],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[4, 2],
        max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
    )


def vit():
    """ViT: patch embedding conv, class token, 2 encoder layers."""
    return _image_classifier(
        keras_hub.models.ViTBackbone,
        patch_size=(8, 8),
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )


def deit():
    """DeiT: ViT with a distillation token."""
    return _image_classifier(
        keras_hub.models.DeiTBackbone,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )


def dinov2():
    """DINOv2: patch 14, layer scale, interpolated position embeddings."""
    return _image_classifier(
        keras_hub.models.DINOV2Backbone,
        side=28,
        patch_size=14,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        position_embedding_shape=(28, 28, 3),
    )


def dinov3():
    """DINOv3: rotary position embeddings and register tokens."""
    return _image_classifier(
        keras_hub.models.DINOV3Backbone,
        patch_size=8,
        num_layers=2,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        num_register_tokens=2,
    )


def swin():
    """Swin Transformer: shifted windows, patch merging."""
    return _image_classifier(
        keras_hub.models.SwinTransformerBackbone,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 2),
        window_size=4,
        drop_path=0.0,
    )


def vit_det():
    """ViTDet (SAM's image encoder): windowed attention, conv neck."""
    return _image_classifier(
        keras_hub.models.ViTDetBackbone,
        patch_size=4,
        hidden_size=16,
        num_layers=2,
        global_attention_layer_indices=[1],
        intermediate_dim=32,
        num_heads=2,
        num_output_channels=16,
        window_size=4,
    )


def bert():
    """BERT text classifier on token ids (padding mask all ones, one segment)."""
    token_ids = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQUENCE_LENGTH,
    )
    backbone_inputs = {
        "token_ids": token_ids,
        "segment_ids": keras.ops.zeros_like(token_ids),
        "padding_mask": keras.ops.ones_like(token_ids),
    }
    return classifier(backbone, token_ids, backbone_inputs, features="sequence_output")


# name -> builder; the image backbones first, then text.
BACKBONES = {
    "ResNet v1": resnet_v1,
    "ResNet v2": resnet_v2,
    "ResNet-vd": resnet_vd,
    "MobileNetV3": mobilenet_v3,
    "MobileNetV5": mobilenet_v5,
    "EfficientNet": efficientnet_v1,
    "EfficientNetV2": efficientnet_v2,
    "CSPNet": cspnet,
    "HGNetV2": hgnetv2,
    "DenseNet": densenet,
    "VGG": vgg,
    "Xception": xception,
    "MiT": mit,
    "ViT": vit,
    "DeiT": deit,
    "DINOv2": dinov2,
    "DINOv3": dinov3,
    "Swin": swin,
    "ViTDet": vit_det,
    "BERT": bert,
}


def sample_data(model, n, seed=0):
    """`(x, y)`: `n` inputs the model takes (normal images or token ids) and labels `(n,)`."""
    rng = np.random.default_rng(seed)
    shape = (n, *model.inputs[0].shape[1:])
    if "int" in str(model.inputs[0].dtype):
        x = rng.integers(1, VOCABULARY_SIZE, shape).astype("int32")
    else:
        x = rng.standard_normal(shape).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, n)
