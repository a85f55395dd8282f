# Mask R-CNN with A2Mamba-T on COCO, 3x schedule: mmdet's multi-scale-with-crop 3x recipe
# (DETR-style pipeline, 36 epochs with steps at 27/33, AMP) with the backbone swapped.
_base_ = 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'

custom_imports = dict(imports=['mmdet_ext'], allow_failed_imports=False)
# The authors' ImageNet-1k weights, downloaded once into torch.hub's cache
# ($TORCH_HOME/hub/checkpoints; a local path works too), see docs/detection.md.
checkpoint_file = 'https://huggingface.co/LMMM2025/A2Mamba/resolve/main/a2mamba_pretrained_weights/a2mamba_tiny.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='A2MambaBackbone',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        # Not stated in the paper: the rate of peers of this size (Swin-T/ConvNeXt-T).
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[48, 96, 256, 448]))

# The backbone's BatchNorms (stem, downsamples, MASS gates) synchronise across GPUs.
sync_bn = 'torch'

# AdamW, no weight decay on norms, relative position biases and the SSM's A_logs/Ds.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'rpb': dict(decay_mult=0.0),
            'A_logs': dict(decay_mult=0.0),
            'Ds': dict(decay_mult=0.0),
        }))
