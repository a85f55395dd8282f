"""Checkpoints by URL: download into torch.hub's cache once, reuse, load; offline errors.

A local HTTP server on 127.0.0.1 serves a random checkpoint in the authors' layout; every test
points ``$TORCH_HOME`` at a temporary folder, so nothing outside it is read or written.
"""
import socket
import threading
from pathlib import Path

import pytest
import torch
from checkpoint_server import CheckpointServer, official_checkpoint

import a2mamba_core
from a2mamba_core import DownloadError, cached_path, create_model, load_pretrained
from a2mamba_core.hub import cache_file

RELEASE = 'https://huggingface.co/LMMM2025/A2Mamba/resolve/main/a2mamba_pretrained_weights/'


@pytest.fixture
def served(tmp_path):
    """(server, source model) with ``a2mamba_nano.pth`` = the model's bare state_dict."""
    root = tmp_path / 'www'
    root.mkdir()
    source = official_checkpoint()
    torch.save(source.state_dict(), root / 'a2mamba_nano.pth')
    server = CheckpointServer(root)
    yield server, source
    server.close()


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_download_once_then_cache_hit(served, torch_home):
    server, _ = served
    url = server.url + 'a2mamba_nano.pth'
    path = cached_path(url, progress=False)
    assert Path(path) == torch_home / 'hub' / 'checkpoints' / 'a2mamba_nano.pth'
    assert server.requests == ['/a2mamba_nano.pth']
    assert cached_path(url, progress=False) == path
    assert server.requests == ['/a2mamba_nano.pth']  # the second call did not reach the server


def test_downloaded_file_is_the_served_one(served, torch_home, tmp_path):
    server, _ = served
    path = cached_path(server.url + 'a2mamba_nano.pth', progress=False)
    assert Path(path).read_bytes() == (tmp_path / 'www' / 'a2mamba_nano.pth').read_bytes()
    assert [p.name for p in Path(path).parent.iterdir() if p.suffix == '.partial'] == []


def test_load_pretrained_and_create_model_from_url(served, torch_home):
    server, source = served
    url = server.url + 'a2mamba_nano.pth'
    x = torch.randn(2, 3, 224, 224)
    expected = logits(source, x)
    model = create_model('a2mamba_n', pretrained=url)
    assert torch.equal(logits(model, x), expected)
    other = create_model('a2mamba_n')
    result = load_pretrained(other, url)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(logits(other, x), expected)
    assert server.requests == ['/a2mamba_nano.pth']


def test_pretrained_true_loads_the_release_url_from_the_cache(torch_home):
    """A file placed by hand where the offline error says loads without any network access."""
    assert a2mamba_core.RELEASED_WEIGHTS == {
        name: f'{RELEASE}a2mamba_{size}.pth'
        for name, size in [('a2mamba_n', 'nano'), ('a2mamba_t', 'tiny'), ('a2mamba_s', 'small'),
                           ('a2mamba_b', 'base'), ('a2mamba_l', 'large')]}
    assert a2mamba_core.DEFAULT_CFGS['a2mamba_n']['checkpoint'] == RELEASE + 'a2mamba_nano.pth'
    source = official_checkpoint()
    target = torch_home / 'hub' / 'checkpoints' / 'a2mamba_nano.pth'
    assert cache_file(RELEASE + 'a2mamba_nano.pth') == str(target)
    target.parent.mkdir(parents=True)
    torch.save({'model': source.state_dict()}, target)
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(logits(create_model('a2mamba_n', pretrained=True), x), logits(source, x))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_unreachable_url_names_url_and_cache_path(torch_home):
    url = f'http://127.0.0.1:{closed_port()}/a2mamba_tiny.pth'
    with pytest.raises(DownloadError) as info:
        cached_path(url, progress=False)
    message = str(info.value)
    assert url in message
    assert str(torch_home / 'hub' / 'checkpoints' / 'a2mamba_tiny.pth') in message
    assert not (torch_home / 'hub' / 'checkpoints' / 'a2mamba_tiny.pth').exists()
    with pytest.raises(DownloadError, match='a2mamba_tiny.pth'):
        create_model('a2mamba_t', pretrained=url)


def test_http_error_is_a_download_error(served, torch_home):
    server, _ = served
    with pytest.raises(DownloadError, match='404'):
        cached_path(server.url + 'a2mamba_huge.pth', progress=False)
    assert not (torch_home / 'hub' / 'checkpoints' / 'a2mamba_huge.pth').exists()


def test_concurrent_callers_download_once(tmp_path, torch_home):
    root = tmp_path / 'www'
    root.mkdir()
    torch.save(official_checkpoint().state_dict(), root / 'a2mamba_nano.pth')
    server = CheckpointServer(root, delay=0.3)  # both callers are inside cached_path at once
    try:
        paths = []
        threads = [threading.Thread(target=lambda: paths.append(cached_path(server.url + 'a2mamba_nano.pth',
                                                                           progress=False)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(paths) == 2 and paths[0] == paths[1]
        assert server.requests == ['/a2mamba_nano.pth']
    finally:
        server.close()


def test_local_paths_pass_through(tmp_path, torch_home):
    path = str(tmp_path / 'a2mamba_nano.pth')
    assert cached_path(path) == path
    assert not torch_home.exists()
    with pytest.raises(FileNotFoundError, match='a2mamba_nano.pth'):
        load_pretrained(create_model('a2mamba_n'), path)


def test_create_model_rejects_bad_pretrained():
    with pytest.raises(TypeError, match='pretrained'):
        create_model('a2mamba_n', pretrained=1)


def test_url_without_file_name_is_rejected(torch_home):
    with pytest.raises(ValueError, match='names no file'):
        cached_path('https://example.org/')
