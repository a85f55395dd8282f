# A short run of the A2Mamba-T recipe on one GPU (mixup/cutmix, RandAugment, random erasing,
# label smoothing, EMA, MESA, AMP in bfloat16) on the embedded MNIST-5k digits
# (tools/dataset_converters/prepare_mnist5k.py) at 224 x 224: 5 epochs of 63 iterations, MESA from the 3rd.
# It checks that the full recipe trains (the loss goes down) and measures its throughput
# (mmengine logs the time per iteration); it is not a benchmark of accuracy.
_base_ = './a2mamba-t_8xb256_in1k.py'

data_root = 'data/mnist5k'
metainfo = dict(classes=[str(digit) for digit in range(10)])

data_preprocessor = dict(num_classes=10)
model = dict(head=dict(num_classes=10))

train_dataloader = dict(
    batch_size=64,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train', metainfo=metainfo,
                 pipeline={{_base_.train_pipeline}}),
)
val_dataloader = dict(
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='test', metainfo=metainfo,
                 pipeline={{_base_.test_pipeline}}),
)
test_dataloader = val_dataloader

optim_wrapper = dict(dtype='bfloat16', optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=5, val_interval=5)

custom_hooks = [
    dict(type='EMAHook', momentum=1e-2, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='MESAHook', weight=1.0, start_epoch=2),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=5, max_keep_ckpts=1, save_best=None))
