"""tools/dataset_converters/prepare_nuclei_demo.py: split, COCO instances and semantic maps (no download needed)."""
import json

import numpy as np
import pytest
from conftest import load_tool
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


@pytest.fixture(scope='module')
def tool():
    return load_tool('dataset_converters/prepare_nuclei_demo.py')


def test_train_crops_never_overlap_the_validation_quadrant(tool):
    split = tool.split_origins(512)
    assert split['val'] == [(256, 256)]
    assert len(split['train']) == len(set(split['train'])) == 9
    val = np.zeros((512, 512), bool)
    val[256:, 256:] = True
    for row, col in split['train']:
        assert not val[row:row + 256, col:col + 256].any()


def test_instances_encode_masks_boxes_and_drop_fragments(tool):
    labels = np.zeros((40, 50), np.int32)
    labels[3:10, 5:20] = 7  # 7 x 15 rectangle
    labels[20:31, 30:36] = 2  # 11 x 6 rectangle
    labels[39, 0:3] = 9  # a 3-pixel fragment cut by the crop border
    annotations = tool.instances(labels)
    assert len(annotations) == 2
    for ann, label in zip(annotations, (2, 7)):
        mask = labels == label
        rows, cols = np.where(mask)
        rle = dict(ann['segmentation'], counts=ann['segmentation']['counts'].encode())
        assert np.array_equal(mask_utils.decode(rle), mask.astype(np.uint8))
        assert ann['bbox'] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert ann['area'] == mask.sum() and ann['category_id'] == 1 and ann['iscrowd'] == 0


def test_write_split_produces_coco_and_semantic_maps(tool, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (512, 512), dtype=np.uint8)
    labels = np.zeros((512, 512), np.int32)
    labels[300:320, 300:330] = 1
    labels[10:30, 10:25] = 2
    assert tool.write_split('val', [(256, 256)], image, labels, tmp_path) == 1
    coco = COCO(str(tmp_path / 'annotations' / 'instances_val.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == ['nucleus']
    (ann,) = coco.loadAnns(coco.getAnnIds())
    assert ann['id'] == 1 and ann['image_id'] == 1
    assert ann['bbox'] == [44, 44, 30, 20]
    picture = np.array(Image.open(tmp_path / 'images' / 'val' / 'nuclei_r256_c256.png'))
    assert picture.shape == (256, 256, 3) and np.array_equal(picture[..., 1], image[256:, 256:])
    seg = np.array(Image.open(tmp_path / 'seg_maps' / 'val' / 'nuclei_r256_c256.png'))
    assert np.array_equal(seg, (labels[256:, 256:] > 0).astype(np.uint8))
    assert json.loads((tmp_path / 'annotations' / 'instances_val.json').read_text())['images'][0]['width'] == 256
