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
