"""The authors' released weights and a download cache for checkpoints given by URL.

Downloads go to torch.hub's checkpoint directory (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``) under the URL's file name: the directory and names that
mmengine's ``CheckpointLoader`` and timm use, so a file fetched by any of them is reused by
the others and by :func:`cached_path`.
"""
import os
from http.client import HTTPException
from typing import Dict
from urllib.parse import urlparse

import torch.hub
from filelock import FileLock

RELEASE_URL = 'https://huggingface.co/LMMM2025/A2Mamba/resolve/main/a2mamba_pretrained_weights/'

# ImageNet-1k classification weights of each size, as released by the authors.
RELEASED_WEIGHTS: Dict[str, str] = {
    'a2mamba_n': RELEASE_URL + 'a2mamba_nano.pth',
    'a2mamba_t': RELEASE_URL + 'a2mamba_tiny.pth',
    'a2mamba_s': RELEASE_URL + 'a2mamba_small.pth',
    'a2mamba_b': RELEASE_URL + 'a2mamba_base.pth',
    'a2mamba_l': RELEASE_URL + 'a2mamba_large.pth',
}


class DownloadError(RuntimeError):
    """A checkpoint URL could not be fetched (offline, unreachable, or an HTTP error)."""


def is_url(path: str) -> bool:
    return urlparse(str(path)).scheme in ('http', 'https')


def cache_dir() -> str:
    """Where downloaded checkpoints are kept: ``torch.hub.get_dir()/checkpoints``."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints')


def cache_file(url: str) -> str:
    """The cached copy of ``url``: its file name inside :func:`cache_dir`."""
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f'the checkpoint URL {url!r} names no file')
    return os.path.join(cache_dir(), name)


def cached_path(path_or_url: str, progress: bool = True) -> str:
    """Returns a local file for a checkpoint path or ``http(s)://`` URL.

    A local path is returned unchanged (existence is the reader's check). A URL is downloaded
    on first use into :func:`cache_file` and the cached copy is returned from then on, without
    network access. Concurrent callers (e.g. the processes of one distributed run) wait for a
    single download instead of each fetching the file.

    Args:
        path_or_url: a file path, or an ``http://``/``https://`` URL.
        progress: show a progress bar on stderr while downloading.

    Raises:
        DownloadError: the URL is not cached and cannot be fetched; the message names the URL
            and where to place a copy fetched by other means.
    """
    if not is_url(path_or_url):
        return path_or_url
    dst = cache_file(path_or_url)
    if os.path.isfile(dst):
        return dst
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with FileLock(dst + '.lock'):
        if os.path.isfile(dst):  # another process finished the download while we waited
            return dst
        try:
            torch.hub.download_url_to_file(path_or_url, dst, progress=progress)
        except (OSError, HTTPException) as exc:  # URLError and HTTPError are OSErrors
            raise DownloadError(
                f'cannot download the checkpoint {path_or_url} ({exc}). Without network access, fetch the '
                f'file elsewhere and place it at {dst} (torch.hub\'s cache: $TORCH_HOME/hub/checkpoints), '
                'or pass the local file\'s path instead of the URL') from exc
    return dst
