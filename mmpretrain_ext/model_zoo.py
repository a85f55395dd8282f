"""The classification models of the model index, registered with mmpretrain's ``ModelHub``.

After ``import mmpretrain_ext``, ``mmpretrain.list_models('*a2mamba*')`` lists them,
``mmpretrain.get_model(name, pretrained=True)`` builds one with the authors' released weights
(downloaded once into torch.hub's cache), and ``mmpretrain.inference_model(name, image)`` (or
with a model from ``get_model``) classifies an image: ``inference_model`` picks its inferencer
from the task of the model's index entry.
"""
from mmpretrain.apis import ModelHub

from mmengine_ext.model_zoo import zoo_root

METAFILE = 'configs/mmpretrain/metafile.yml'


def register_models() -> None:
    """Adds this package's classification models to ``ModelHub``; their ``Config`` paths are
    resolved against :func:`~mmengine_ext.model_zoo.zoo_root`."""
    root = zoo_root()
    ModelHub.register_model_index(root / METAFILE, config_prefix=root)
