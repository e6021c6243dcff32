"""`ganinv-run --align` end to end with the real dlib detector on a real photo (skimage's astronaut)."""
import json

import numpy as np
import pytest
from PIL import Image

from ganinv_core import cli

dlib = pytest.importorskip('dlib', reason='the [align] extra (dlib-bin) is not installed')
skdata = pytest.importorskip('skimage.data')


def test_align_restore_paste_back_on_astronaut(tmp_path, capsys):
    photo = skdata.astronaut()                                   # 512x512 RGB, one face
    Image.fromarray(photo).save(tmp_path / 'astronaut.png')
    code = cli.main(['--network', 'random-32', '--steps', '2', '--quiet', '--align', '--target',
                     str(tmp_path / 'astronaut.png'), '--outdir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert code == 0, err
    d = tmp_path / 'out' / 'astronaut'
    with Image.open(d / 'pasted.png') as im:
        pasted = np.asarray(im.convert('RGB'))
    assert pasted.shape == photo.shape
    info = json.loads((d / 'alignment.json').read_text())
    lm = np.asarray(info['landmarks'])
    assert lm.shape == (68, 2)
    # Far from the face the photo is untouched; the face region was replaced by the (random) restoration.
    x0, y0 = lm.min(0).astype(int)
    x1, y1 = lm.max(0).astype(int)
    assert np.array_equal(pasted[:40, -40:], photo[:40, -40:])
    face = (slice(y0, y1), slice(x0, x1))
    assert np.abs(pasted[face].astype(int) - photo[face]).mean() > 5
