"""Short names for NVIDIA's public StyleGAN2 networks and a download cache.

Files go to `$GANINV_CACHE` (default `~/.cache/ganinv`). A download is streamed to a temp file, checked against
Content-Length, then moved into place with `os.replace`; its sha256 is written beside it (`<file>.sha256`) and
checked on every reuse. No hashes are hard-coded: NVIDIA publishes none.
"""
import hashlib
import os
import tempfile
import urllib.error
import urllib.request

from ._errors import WeightsError

_ADA = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained'
_NGC = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files'

NETWORKS = {
    'ffhq': f'{_ADA}/ffhq.pkl',                                   # 1024, stylegan2-ada-pytorch
    'metfaces': f'{_ADA}/metfaces.pkl',                           # 1024
    'ffhq-256': f'{_ADA}/transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq-512': f'{_ADA}/transfer-learning-source-nets/ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq-1024': f'{_ADA}/transfer-learning-source-nets/ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'stylegan2-ffhq-1024': f'{_NGC}/stylegan2-ffhq-1024x1024.pkl',  # stylegan3 repository's StyleGAN2
    'stylegan2-ffhqu-1024': f'{_NGC}/stylegan2-ffhqu-1024x1024.pkl',
    'stylegan2-metfaces-1024': f'{_NGC}/stylegan2-metfaces-1024x1024.pkl',
}


def cache_dir():
    """`$GANINV_CACHE` or `~/.cache/ganinv`."""
    return os.environ.get('GANINV_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'ganinv')


def _sha256(path):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def cached_path(url):
    """Where `url` is cached: the file name of the URL, prefixed by a short hash unless it is a short name's."""
    name = url.rstrip('/').rsplit('/', 1)[-1] or 'network.pkl'
    if url not in NETWORKS.values():
        name = f'{hashlib.sha256(url.encode()).hexdigest()[:10]}-{name}'
    return os.path.join(cache_dir(), name)


def fetch(url, label=None, progress=True):
    """Return a local path for `url`, downloading it into the cache on first use.

    Args:
        url: http(s) URL.
        label: what the user asked for (a short name), for messages; default the URL.
        progress: show a tqdm progress bar while downloading.

    Returns:
        The cached file's path.

    Raises:
        WeightsError: download failure (with how to pass a local file), size mismatch, hash mismatch on reuse.
    """
    label = label or url
    path = cached_path(url)
    if os.path.exists(path):
        digest_file = path + '.sha256'
        if os.path.exists(digest_file):
            with open(digest_file) as f:
                want = (f.read().split() or [''])[0]
            if _sha256(path) != want:
                raise WeightsError(f'{path}: cached download of {label} does not match its recorded sha256 '
                                   '(corrupted?); delete it to download again')
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir(), prefix='.download-')
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, os.fdopen(fd, 'wb') as out:
                size = int(resp.headers.get('Content-Length') or 0) or None
                h, done = hashlib.sha256(), 0
                bar = _progress(size, os.path.basename(path), progress)
                for chunk in iter(lambda: resp.read(1 << 20), b''):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                bar.close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, 'reason', None) or e
            raise WeightsError(f'cannot download {label} from {url} ({reason}); if offline, pass a local '
                               f'file instead: --network /path/to/{os.path.basename(path)}') from None
        if size is not None and done != size:
            raise WeightsError(f'{label}: download from {url} is incomplete ({done} of {size} bytes); try again')
        os.replace(tmp, path)
        with open(path + '.sha256', 'w') as f:
            f.write(f'{h.hexdigest()}  {os.path.basename(path)}\n')
        return path
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _progress(total, desc, enabled):
    """A tqdm byte counter on stderr (`total` None when the size is unknown)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit='B', unit_scale=True, unit_divisor=1024, disable=not enabled)
