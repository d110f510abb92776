"""Where checkpoints come from: regular files only, folders, safetensors, URLs."""
import os

import pytest
import torch

from cvt_backbone import CheckpointError, read_checkpoint
from cvt_backbone.checkpoint import download
from cvt_backbone.checkpoint.download import cache_path
from cvt_backbone.checkpoint.write import atomic_save_safetensors
from tests.helpers import serve


# ----------------------------------------------------------------------------- reading files
def test_only_regular_files_are_opened(tmp_path):
    fifo = tmp_path / 'weights.pth'
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"weights.pth'?: it is a FIFO \(named pipe\)"):
        read_checkpoint(fifo)  # would block forever if it were opened
    with pytest.raises(CheckpointError, match=r"'/dev/zero'.*lies under /dev"):
        read_checkpoint('/dev/zero')
    with pytest.raises(CheckpointError, match=r"'/proc/self/environ'.*lies under /proc"):
        read_checkpoint('/proc/self/environ')
    link = tmp_path / 'innocent.pth'
    link.symlink_to('/dev/urandom')
    with pytest.raises(CheckpointError, match='innocent.pth.*lies under /dev'):
        read_checkpoint(link)


def test_missing_empty_and_folder_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        read_checkpoint(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match="'work_dirs/epoch_1.pth' does not exist"):
        read_checkpoint('work_dirs/epoch_1.pth')  # a relative file name, not a hub id
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'empty.pth.*empty \(0 bytes\)'):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match=r'folder .* holds no weights: expected one of '
                                              r'model.safetensors, pytorch_model.bin'):
        read_checkpoint(tmp_path)


def test_safetensors_are_read_and_truncation_is_named(tmp_path):
    path = tmp_path / 'w.safetensors'
    weights = {'a': torch.randn(3, 5), 'b': torch.arange(4)}
    atomic_save_safetensors(weights, path, {'arch': 'cvt-13'})
    loaded = read_checkpoint(path)
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    named_pth = tmp_path / 'looks_like_torch.pth'
    named_pth.write_bytes(path.read_bytes())  # the content decides, not the name
    assert torch.equal(read_checkpoint(named_pth)['a'], weights['a'])
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match=r'safetensors file .*cut.safetensors.*truncated'):
        read_checkpoint(cut)
    escape = tmp_path / 'escape.safetensors'
    atomic_save_safetensors({'\x1b[2J': torch.zeros(1)}, escape)
    with pytest.raises(CheckpointError, match='a tensor name holds control characters'):
        read_checkpoint(escape)


# ----------------------------------------------------------------------------- URLs
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub folder of the test's own."""
    folder = tmp_path / 'hub'
    torch.hub.set_dir(str(folder))
    yield folder
    monkeypatch.setattr(torch.hub, '_hub_dir', None)


def test_url_is_downloaded_once_under_a_name_of_ours(tmp_path, hub):
    served = tmp_path / 'served' / 'microsoft' / 'cvt-13' / 'resolve' / 'main'
    served.mkdir(parents=True)
    torch.save({'w': torch.ones(3)}, served / 'model.bin')
    with serve(tmp_path / 'served') as base:
        url = f'{base}/microsoft/cvt-13/resolve/main/model.bin'
        assert torch.equal(read_checkpoint(url)['w'], torch.ones(3))
        cached = cache_path(url)
        assert os.path.isfile(cached) and os.path.dirname(cached) == download.url_cache_dir()
        other = f'{base}/microsoft/cvt-21/resolve/main/model.bin'
        assert cache_path(other) != cached  # same file name, other repository
        (served / 'model.bin').unlink()
        assert torch.equal(read_checkpoint(url)['w'], torch.ones(3))  # from the cache
        with pytest.raises(CheckpointError, match=r'Could not download checkpoint .*missing'
                                                  r'.pth: HTTP 404'):
            read_checkpoint(f'{base}/missing.pth')
    with pytest.raises(CheckpointError, match=r'Could not download checkpoint '
                                              r'http://127.0.0.1:9/x.pth: .*refused'):
        read_checkpoint('http://127.0.0.1:9/x.pth')


def test_cache_names_cannot_leave_the_cache_folder():
    for url in ('https://h/a/../../../../etc/passwd', 'https://h/%2e%2e%2f%2e%2e%2fx.pth',
                'https://h/', 'https://h/.bashrc', 'https://h/' + 'a' * 300 + '.pth'):
        path = cache_path(url)
        assert os.path.dirname(path) == download.url_cache_dir(), url
        assert not os.path.basename(path).startswith('.') and len(os.path.basename(path)) < 120


def test_a_cached_download_is_reread_safely(tmp_path, hub):
    """Whatever sits in the cache under a URL's name is read with the same reader."""
    from tests.checkpoint.crafted import os_system
    url = 'https://example.invalid/weights.pth'
    os.makedirs(os.path.dirname(cache_path(url)), exist_ok=True)
    os.replace(os_system(tmp_path), cache_path(url))
    with pytest.raises(CheckpointError, match='posix.system'):
        read_checkpoint(url)
    assert not (tmp_path / 'PWNED').exists()
