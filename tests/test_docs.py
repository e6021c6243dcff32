"""The Python example in docs/cli.md runs as written, with only the network, the device and the run's length swapped
for the CPU (the built-in random generator: no download, no GPU)."""
import re
from pathlib import Path

import numpy as np
from PIL import Image

DOCS = Path(__file__).resolve().parent.parent / 'docs'
SWAPS = [("load_generator('ffhq', device='cuda')", "load_generator('random-32', device='cpu')"),
         ('target.cuda()', 'target'),
         ("losses=['vgg16', 'latent-dist', 'noise-reg']", "losses=['mse', 'latent-dist', 'noise-reg']"),  # offline
         ('steps=1000', 'steps=2')]


def test_the_python_api_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r'```python\n(.*?)```', (DOCS / 'cli.md').read_text(), flags=re.S)
    code = next(b for b in blocks if 'invert(' in b)
    for old, new in SWAPS:
        assert old in code, f'docs/cli.md no longer has {old!r}: update this test with it'
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (48, 40, 3), np.uint8)).save('old_photo.png')
    scope = {}
    exec(compile(code, 'docs/cli.md', 'exec'), scope)
    assert scope['restored'].shape == (32, 32, 3) and scope['restored'].dtype == np.uint8
    assert scope['result'].steps == 2 and set(scope['result'].history) == {'mse', 'latent-dist', 'noise-reg', 'total'}


def test_the_consistent_example_runs_after_it(tmp_path, monkeypatch):
    """The composite example continues the first one: its result keeps the photo's luminance."""
    blocks = re.findall(r'```python\n(.*?)```', (DOCS / 'cli.md').read_text(), flags=re.S)
    first = next(b for b in blocks if 'invert(' in b)
    second = next(b for b in blocks if 'consistent(' in b)
    for old, new in SWAPS:
        first = first.replace(old, new)
    assert second.count('.cuda()') == 3, 'docs/cli.md changed: update this test'
    second = second.replace('.cuda()', '')
    monkeypatch.chdir(tmp_path)   # an old black-and-white photo
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (48, 40), np.uint8)).save('old_photo.png')
    scope = {}
    exec(compile(first, 'docs/cli.md', 'exec'), scope)
    exec(compile(second, 'docs/cli.md', 'exec'), scope)
    kept, luma = scope['kept'].astype(float), np.array([0.299, 0.587, 0.114])
    target = scope['to_uint8'](scope['target'])[0].astype(float)
    inside = ((kept > 0) & (kept < 255)).all(-1)
    assert inside.mean() > 0.3 and np.abs(kept @ luma - target @ luma)[inside].max() <= 1.0
