# A2Mamba-L on ImageNet-1k: the T recipe with drop path 0.5, 20 warm-up epochs, EMA 0.9999,
# MESA 2.0, gradient checkpointing of the first 4 blocks of stages 1 and 2, and crop_pct 0.975.
_base_ = './a2mamba-t_8xb256_in1k.py'

model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5, with_cp=(4, 4, 0, 0)),
    head=dict(in_channels=672),
)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=229, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 2e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20),
]

custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='MESAHook', weight=2.0, start_epoch=75),
]
