# A2Mamba-T on ImageNet-1k, the authors' recipe: 8 GPUs x 256 images, 300 epochs, AdamW,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, mixup 0.8 / cutmix 1.0, label
# smoothing 0.1, gradient clipping 5, AMP, EMA 0.99984 and MESA 1.0 from epoch 75.
# With RandAugment on, timm's pipeline applies no colour jitter, so none is configured.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmpretrain_ext'], allow_failed_imports=False)

model = dict(
    type='MESAImageClassifier',
    backbone=dict(type='A2Mamba', arch='tiny', drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='A2MambaClsHead',
        num_classes=1000,
        in_channels=448,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# evaluation: resize the short side to 224 / crop_pct (0.9), bicubic, centre crop 224
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=256)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(lr=2e-3),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            'rpb': dict(decay_mult=0.0),
            'A_logs': dict(decay_mult=0.0),
            'Ds': dict(decay_mult=0.0),
        }),
)

# linear warm-up from 1e-6 for 5 epochs, then cosine to 1e-5 at epoch 300
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 2e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]

custom_hooks = [
    # timm's decay 0.99984 is mmengine's momentum 1 - 0.99984; timm averages BN statistics too
    dict(type='EMAHook', momentum=1.6e-4, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='MESAHook', weight=1.0, start_epoch=75),
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2, save_best='auto'))

auto_scale_lr = dict(base_batch_size=2048)
