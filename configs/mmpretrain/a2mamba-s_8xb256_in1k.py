# A2Mamba-S on ImageNet-1k: the T recipe with drop path 0.2 and EMA 0.9999.
_base_ = './a2mamba-t_8xb256_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.2), head=dict(in_channels=512))

custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='MESAHook', weight=1.0, start_epoch=75),
]
