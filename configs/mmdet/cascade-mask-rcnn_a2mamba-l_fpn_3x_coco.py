_base_ = './cascade-mask-rcnn_a2mamba-t_fpn_3x_coco.py'

checkpoint_file = 'https://huggingface.co/LMMM2025/A2Mamba/resolve/main/a2mamba_pretrained_weights/a2mamba_large.pth'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 448, 672]))

optim_wrapper = dict(optimizer=dict(lr=2e-4))
