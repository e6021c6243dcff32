"""Identity: ArcFace embeddings of the restoration kept close to the person's (reference photos or the photo)."""
import functools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganinv_core.hooks import Loss, Param
from ganinv_core.io.images import EXTENSIONS, read_image, square, to_tensor
from ganinv_core.nets.arcface import ArcFaceError, shared_arcface

REF_SIZE = 256  # references are read at this side: ArcFace's crop of it is 196 pixels, more than its 112


def _stamp(path: Path):
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None   # read_image names the problem


@functools.lru_cache(maxsize=64)
def _face(path: str, stamp, align: str | None) -> np.ndarray:
    """uint8 (REF_SIZE, REF_SIZE, 3): a reference photo, read (and aligned) once per version of the file, not
    again for every batch."""
    photo = read_image(path)
    if align is None:
        return square(photo, REF_SIZE)
    from ganinv_core.io.align import align_faces
    try:
        return align_faces(photo, REF_SIZE, align, 'largest')[0].crop
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None


class Identity(Loss):
    """1 - cos(ArcFace(x), anchor) per image.

    With ``reference``: x is the restoration G(w) and the anchor the mean embedding of FFHQ-aligned photos of the
    same person (one file, or a folder of them; one set for every target of the run). Without: x is the degraded
    restoration and the anchor the photo's own embedding, so that the restoration, degraded as the photo was,
    carries its identity (useful where the damage leaves the face recognisable: holes, colour, mild blur).
    """
    name = 'identity'
    help = '1 - cos of ArcFace identity embeddings: restoration vs reference photos of the person, else vs the photo'
    cuda_graph_safe = True
    default_weight = 0.1
    params = (Param('weights', str, None, "insightface arcface_torch backbone.pth (default: $GANINV_ARCFACE), "
                                          "or 'random'"),
              Param('reference', str, None, 'FFHQ-aligned photo(s) of the same person: an image or a folder of '
                                            'them (default: the photo itself)'),
              Param('align', str, None, "FFHQ-align the reference photos first (the largest face of each) with this "
                                        "landmark detector, e.g. 'dlib' (extra [align])"))
    test_params = {'weights': 'random'}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.source = self.weights or os.environ.get('GANINV_ARCFACE')
        if not self.source:
            raise self.fail('weights', 'no ArcFace weights: pass identity:weights=/path/to/backbone.pth (insightface '
                                       'arcface_torch, e.g. ms1mv3_arcface_r50_fp16) or set GANINV_ARCFACE')
        if not (self.source.startswith('random') or os.path.isfile(self.source)):
            where = '' if self.weights else f'$GANINV_ARCFACE={self.source!r}: '
            raise self.fail('weights', f'{where}no such file')
        self.references = None
        if self.reference is not None:
            p = Path(self.reference)
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in EXTENSIONS) if p.is_dir() else [p]
            if not files:
                raise self.fail('reference', f'folder {self.reference!r} has no images')
            try:
                self.references = np.stack([_face(str(f), _stamp(f), self.align) for f in files])
            except ValueError as e:   # unreadable, or (align) no face found
                raise self.fail('reference', str(e)) from None
        elif self.align is not None:
            raise self.fail('align', 'aligns the reference photos; give them with reference=')
        self.arcface = self.anchor = None

    def prepare(self, target, mask):
        """The anchor embeddings: [1, 512] from the references, else [N, 512] from the targets."""
        try:
            self.arcface = shared_arcface(self.source, target.device)
        except ArcFaceError as e:
            raise self.fail('weights', str(e)) from None
        with torch.no_grad():
            if self.references is None:
                self.anchor = self.arcface.embed(target.detach())
            else:
                refs = to_tensor(self.references).to(target.device)
                self.anchor = F.normalize(self.arcface.embed(refs).mean(0, keepdim=True), dim=1)

    def forward(self, ctx):
        """[N] 1 - <embed(x), anchor>, x = G(w) with references, else the degraded G(w)."""
        if self.anchor is None:
            self.prepare(ctx.target, ctx.mask)
        x = ctx.pred if self.references is None else ctx.image
        return 1 - (self.arcface.embed(x) * self.anchor).sum(1)
