_base_ = './upernet_a2mamba-t_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'https://huggingface.co/LMMM2025/A2Mamba/resolve/main/a2mamba_pretrained_weights/a2mamba_nano.pth'

model = dict(
    backbone=dict(
        arch='nano',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[32, 64, 128, 192]),
    auxiliary_head=dict(in_channels=128))
