# UperNet with A2Mamba-T on ADE20K, 512x512 crops, 160k iterations of 8 GPUs x 2 images:
# mmseg's Swin UperNet recipe (UPerHead 512 channels, pool scales (1, 2, 3, 6), auxiliary FCN
# head on stage 3 with weight 0.4, SyncBN heads, AdamW 6e-5 / wd 0.01, 1500 warm-up
# iterations then poly decay with power 1) with the backbone swapped, plus AMP.
# Testing runs on whole images of any size (mmseg does not pad them).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmseg_ext'], allow_failed_imports=False)
# The authors' ImageNet-1k weights, downloaded once into torch.hub's cache
# ($TORCH_HOME/hub/checkpoints; a local path works too), see docs/segmentation.md.
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
    decode_head=dict(in_channels=[48, 96, 256, 448]),
    auxiliary_head=dict(in_channels=256))

# The backbone's BatchNorms (stem, downsamples, MASS gates) synchronise across GPUs.
sync_bn = 'torch'

# AdamW, no weight decay on norms, relative position biases and the SSM's A_logs/Ds.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        custom_keys={
            'rpb': dict(decay_mult=0.0),
            'A_logs': dict(decay_mult=0.0),
            'Ds': dict(decay_mult=0.0),
        }))
