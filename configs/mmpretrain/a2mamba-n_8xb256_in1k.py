# A2Mamba-N on ImageNet-1k: the T recipe with lr 4e-3, no drop path, mixup 0.1 and neither
# EMA nor MESA.
_base_ = './a2mamba-t_8xb256_in1k.py'

model = dict(
    type='ImageClassifier',
    backbone=dict(arch='nano', drop_path_rate=0.0),
    head=dict(in_channels=192),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.1), dict(type='CutMix', alpha=1.0)]),
)

optim_wrapper = dict(optimizer=dict(lr=4e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 4e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]

custom_hooks = []
