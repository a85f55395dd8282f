# Multi-scale (0.5-1.75x) + flip testing of upernet_a2mamba-n_8xb2-160k_ade20k-512x512.py:
#   python tools/test.py configs/mmseg/upernet_a2mamba-n_8xb2-160k_ade20k-512x512-ms-flip-test.py CHECKPOINT
_base_ = './upernet_a2mamba-n_8xb2-160k_ade20k-512x512.py'

model = dict(_delete_=True, type='SegTTAModel', module=_base_.model)
test_dataloader = dict(dataset=dict(pipeline=_base_.tta_pipeline))
