# Embedded demo: Cascade Mask R-CNN with A2Mamba-N, trained from scratch on CPU in minutes on
# real fluorescence-microscopy nuclei (one class) and evaluated with COCO bbox and segm AP.
# Data: python tools/dataset_converters/prepare_nuclei_demo.py (extracts it from the stardist wheel on PyPI), or
# `make demo-det`, which also trains and evaluates. The detector is the COCO cascade config's
# (4conv1fc GIoU heads, mask heads); for a CPU its widths (256 -> 64 channels), its anchors
# (nuclei are ~25 px), its proposal and RoI counts and the schedule are scaled down.
_base_ = './cascade-mask-rcnn_a2mamba-t_fpn_3x_coco.py'

data_root = 'data/nuclei/'
metainfo = dict(classes=('nucleus', ), palette=[(220, 20, 60)])
width = 64

model = dict(
    backbone=dict(arch='nano', drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 192], out_channels=width),
    rpn_head=dict(
        in_channels=width, feat_channels=width,
        anchor_generator=dict(scales=[4], ratios=[0.5, 1.0, 2.0])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=[
            dict(head, num_classes=1, in_channels=width, conv_out_channels=width, fc_out_channels=4 * width)
            for head in _base_.model.roi_head.bbox_head
        ],
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(num_classes=1, in_channels=width, conv_out_channels=width)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=200),
        rcnn=[dict(stage, sampler=dict(stage.sampler, num=64)) for stage in _base_.model.train_cfg.rcnn]),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=200),
        rcnn=dict(max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    # 128-px crops of the 256-px tiles keep a CPU iteration short
    dict(type='RandomCrop', crop_size=(128, 128), recompute_bbox=True),
    dict(type='RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs, val_interval=8)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[20], gamma=0.1),
]
# fp32 on CPU
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0))
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=max_epochs),
    visualization=dict(draw=False))
log_processor = dict(window_size=5)
randomness = dict(seed=0)
