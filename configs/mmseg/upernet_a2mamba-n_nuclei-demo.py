# Embedded demo: UperNet with A2Mamba-N, trained from scratch on CPU in minutes to segment real
# fluorescence-microscopy nuclei from background, evaluated with mmseg's IoUMetric (mIoU).
# Data: python tools/dataset_converters/prepare_nuclei_demo.py (extracts it from the stardist wheel on PyPI), or
# `make demo-seg`, which also trains and evaluates. The model is the ADE20K UperNet config's;
# only the head widths, the crop size and the schedule are scaled down for a CPU.
_base_ = './upernet_a2mamba-n_8xb2-160k_ade20k-512x512.py'

data_root = 'data/nuclei/'
metainfo = dict(classes=('background', 'nucleus'), palette=[(0, 0, 0), (220, 20, 60)])
crop_size = (128, 128)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(channels=64, num_classes=2),
    auxiliary_head=dict(channels=32, num_classes=2))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.png',
    seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        data_prefix=dict(img_path='images/train', seg_map_path='seg_maps/train'),
        pipeline=train_pipeline,
        **dataset))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        data_prefix=dict(img_path='images/val', seg_map_path='seg_maps/val'),
        pipeline=test_pipeline,
        **dataset))
test_dataloader = val_dataloader

max_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=50)
# The warm-up and the poly decay both start at 0 (their factors multiply) and the decay's end is
# left to the runner (train_cfg.max_iters), so `--cfg-options train_cfg.max_iters=N` shortens
# or lengthens the whole schedule for any N >= 1.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0),
]
# fp32 on CPU
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters),
    visualization=dict(draw=False))
randomness = dict(seed=0)
