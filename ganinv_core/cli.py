"""``ganinv-run`` and ``ganinv-convert``: flags and TOML config -> the Python API -> files. See docs/cli.md.

Exit codes: 0 ok; 1 an inversion failed (NaN/inf, a plugin's error, out of memory for one photo) or an unexpected
error; 2 bad input (each problem printed as one line naming the file and the reason; the other targets are still
processed); 130 interrupted.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ._batches import Batches, run_workers
from ._errors import exc_line, out_of_memory

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
_PASTE_LOCK = threading.Lock()
_LANDMARK_LOCK = threading.Lock()   # one detector object serves every worker thread
_LIST_KEYS = ('target', 'degradation', 'loss')


class ConfigError(ValueError):
    """A config file or flag combination is not valid (one line naming it and the reason)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (a ConfigError: no usage block, which runs to 13 lines here)."""

    def error(self, message):
        raise ConfigError(f'{message} (see {self.prog} --help)')


def _snapshots(text: str) -> list[int]:
    """``'100,400'`` -> ``[100, 400]`` (sorted, unique, >= 0); the ``--snapshots`` type."""
    try:
        steps = sorted({int(s) for s in str(text).split(',') if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated step numbers, got {text!r}') from None
    if any(s < 0 for s in steps):
        raise argparse.ArgumentTypeError(f'step numbers must be >= 0, got {text!r}')
    return steps


def _face(text: str):
    """``'largest'``, ``'all'`` or a face index; the ``--face`` type."""
    if str(text) in ('largest', 'all'):
        return str(text)
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'largest', 'all' or a face index, got {text!r}") from None


def _whole(text, lo: int, hi: int | None = None) -> int:
    """``text`` as an integer in [lo, hi] (no upper bound: None), else an ArgumentTypeError saying so."""
    try:
        v = int(text)
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v > hi):
        want = f'in [{lo}, {hi}]' if hi is not None else f'>= {lo}'
        raise argparse.ArgumentTypeError(f'must be a whole number {want}, got {text!r}')
    return v


def _positive(text) -> int:
    """An integer >= 1; the type of ``--batch-size``."""
    return _whole(text, 1)


def _restarts(text) -> int:
    """An integer in [1, MAX_RESTARTS]; the type of ``--restarts``."""
    from ganinv_core.engine._restarts import MAX_RESTARTS
    return _whole(text, 1, MAX_RESTARTS)


def _candidates(text) -> int:
    """An integer in [1, MAX_CANDIDATES]; the type of ``--init-search``."""
    from ganinv_core.engine._search import MAX_CANDIDATES
    return _whole(text, 1, MAX_CANDIDATES)


def _tune_steps(text) -> int:
    """An integer in [0, MAX_STEPS]; the type of ``--tune``."""
    from ganinv_core.engine._tune import MAX_STEPS
    return _whole(text, 0, MAX_STEPS)


def _tune_rate(text) -> float:
    """A finite number > 0; the type of ``--tune-lr``."""
    v = _number(text)
    if not 0 < v < math.inf:
        raise argparse.ArgumentTypeError(f'must be a finite number > 0, got {text!r}')
    return v


def _steps(text) -> int:
    """An integer in [1, MAX_STEPS]; the type of ``--steps``."""
    from ganinv_core.engine._inversion import MAX_STEPS
    return _whole(text, 1, MAX_STEPS)


def _number(text) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be a number, got {text!r}') from None


def _rate(text) -> float:
    """A finite number >= 0 (0: render the --init latent as it is); the type of ``--lr``."""
    v = _number(text)
    if not 0 <= v < math.inf:
        raise argparse.ArgumentTypeError(f'must be a finite number >= 0, got {text!r}')
    return v


def _fraction(text) -> float:
    """A number in [0, 1]; the type of ``--polish``."""
    v = _number(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f'must be a fraction in [0, 1], got {text!r}')
    return v


def build_parser() -> argparse.ArgumentParser:
    """The ``ganinv-run`` parser. Every default is None here; ``DEFAULTS`` fills what neither flags nor
    the config file set, so a flag always overrides the file."""
    p = _Parser(prog='ganinv-run', description='Restore face photos by StyleGAN2 inversion.',
                argument_default=None)
    a = p.add_argument
    a('--network', help='generator: .pkl/.safetensors path, URL, short name (ffhq) or random-32/64/256/1024')
    a('--target', nargs='+', action='extend', metavar='PATH', help='image files, folders or seed:N (repeatable)')
    a('--degradation', action='append', metavar='SPEC', help="degradation spec, e.g. 'inpaint:mode=center' (repeatable, applied in order)")
    a('--loss', action='append', metavar='SPEC', help="loss spec, e.g. 'vgg16:weight=1' (repeatable; default vgg16, latent-dist, noise-reg)")
    a('--mask', metavar='FILE', help='mask for inpainting a real photo: white = known, black = damaged; the photo\'s size')
    a('--simulate', action='store_true', help='targets are clean: degrade them first, then compare with them')
    a('--arcface', metavar='PTH', help='ArcFace weights (insightface arcface_torch backbone.pth) for the identity '
                                       'metric (default: $GANINV_ARCFACE, else the identity loss\'s, else none)')
    a('--steps', type=_steps, help='optimisation steps (default 1000)')
    a('--lr', type=_rate, help='peak learning rate (default 0.1)')
    a('--latent-space', choices=('w', 'w+'), help='optimise one w (w, default) or one per layer (w+)')
    a('--no-noise-opt', action='store_true', help="keep the generator's constant noise instead of optimising it")
    a('--init', metavar='NPZ', help='start from a latent file (projected_w.npz) instead of w_avg')
    a('--batch-size', type=_positive, help='targets optimised together (default 4)')
    a('--restarts', type=_restarts, metavar='K',
      help='optimise each target from K starts (w_avg, then random latents) and keep the lowest final loss (default 1)')
    a('--init-search', type=_candidates, metavar='K',
      help='start each target from the best of K latents (w_avg, then random ones) under its loss (default 1: w_avg)')
    a('--tune', type=_tune_steps, metavar='STEPS',
      help="pivotal tuning: after the latent search, STEPS Adam steps on a copy of the generator's weights per "
           'photo, the latent held (PTI; default 0: off)')
    a('--tune-lr', type=_tune_rate, metavar='LR', help='learning rate of --tune (default 3e-4, PTI\'s)')
    a('--save-generator', action='store_true',
      help="with --tune: write each photo's tuned generator (generator.safetensors; --network takes it)")
    a('--precision', choices=('auto', 'fp32', 'tf32', 'bf16', 'fp16'), help='numeric precision (default auto)')
    a('--polish', type=_fraction, metavar='FRACTION',
      help='with bf16/fp16: run this fraction of the steps, at the end, in full precision (default 0)')
    a('--device', help='torch device, or a comma-separated list sharing the batches (cuda:0,cuda:1); default cuda if '
                       'available, else cpu')
    a('--modconv', choices=('auto', 'fused', 'nonfused'), help='modulated conv form (default auto: non-fused)')
    a('--cuda-graph', action=argparse.BooleanOptionalAction,
      help='capture the step as a CUDA graph and replay it (default: on CUDA devices when every degradation and '
           'loss of the run is marked graph-safe, as the built-ins are; --no-cuda-graph: never)')
    a('--compile', action='store_true', help='torch.compile the step (slow first step)')
    a('--channels-last', action='store_true', help='channels-last activations in the bf16/fp16 blocks')
    a('--frame-steps', type=_steps, metavar='N',
      help='video targets: steps for every frame after the first, which starts from the previous one (default steps/4)')
    a('--frame-lr', type=_rate, metavar='LR', help='video targets: peak learning rate of those frames (default lr/4)')
    a('--temporal', type=_rate, metavar='WEIGHT',
      help="video targets: weight of init-dist (stay near the previous frame's latent) for those frames (default "
           "0.01; 0: off)")
    a('--seed', type=int, help='random seed (default 303)')
    a('--outdir', help='output folder (default out)')
    a('--overwrite', action='store_true', help='replace existing outputs')
    a('--resume', action='store_true',
      help='continue a run in OUTDIR: skip the targets already restored there, restore the rest (same options)')
    a('--save-video', action='store_true', help='write progress.mp4 per target')
    a('--snapshots', type=_snapshots, metavar='STEPS', help='also save the restoration at these steps, e.g. 100,400')
    a('--align', action='store_true', help='detect and FFHQ-align faces, restore them, paste them back (extra [align])')
    a('--face', type=_face, help="with --align: 'largest' (default), 'all' or a face index")
    a('--detector', metavar='SPEC', help="with --align: landmark detector spec (default dlib; see --list-plugins)")
    a('--landmarks', metavar='SPEC', help="score the restoration's 68 landmarks against the original's (--simulate) "
                                          "or the photo's with this detector, e.g. dlib (normalised mean error)")
    a('--config', metavar='FILE.toml', help='read options from a TOML file (same keys as the flags)')
    a('--quiet', action='store_true', help='no progress bar')
    a('--list-plugins', action='store_true', help='list degradations, losses and detectors, then exit')
    a('--doctor', action='store_true', help='report which kernel backend each op uses, then exit')
    a('--convert', nargs=2, metavar=('SRC', 'DST'), help='convert a network to .safetensors, then exit')
    for act in p._actions:  # unset switches stay None, so a config file can set them
        if isinstance(act, argparse._StoreTrueAction):
            act.default = None
    return p


DEFAULTS = dict(network=None, target=None, degradation=[], loss=None, mask=None, simulate=False, arcface=None,
                steps=1000, lr=0.1, latent_space='w', no_noise_opt=False, init=None, batch_size=4, restarts=1,
                init_search=1, tune=0, tune_lr=3e-4, save_generator=False, precision='auto', polish=0.0, device=None,
                modconv='auto', cuda_graph='auto', compile=False, channels_last=False, frame_steps=None, frame_lr=None,
                temporal=0.01, seed=303, outdir='out', overwrite=False, resume=False, save_video=False, snapshots=[],
                align=False, face='largest', detector='dlib', landmarks=None, config=None, quiet=False,
                list_plugins=False, doctor=False, convert=None)


def load_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """Read a TOML file whose keys are the flags' names (``batch-size`` or ``batch_size``), typed like them."""
    import tomllib
    try:
        with open(path, 'rb') as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f'{path}: no such config file') from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f'{path}: not valid TOML ({e})') from None
    actions = {a.dest: a for a in parser._actions if a.dest not in ('help', 'config')}
    cfg = {}
    for key, value in raw.items():
        dest = key.replace('-', '_')
        act = actions.get(dest)
        if act is None or dest in ('list_plugins', 'doctor', 'convert'):
            raise ConfigError(f'{path}: unknown key {key!r} (valid: {", ".join(sorted(k.replace("_", "-") for k in actions))})')
        try:
            cfg[dest] = _typed(act, value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            raise ConfigError(f'{path}: key {key!r}: {e}') from None
    return cfg


def _typed(act: argparse.Action, value):
    """Check and convert one config value the way its flag would be."""
    if isinstance(act, argparse.BooleanOptionalAction):  # true, false or "auto"
        if not isinstance(value, bool) and value != 'auto':
            raise TypeError(f'expected true, false or "auto", got {value!r}')
        return value
    if isinstance(act, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise TypeError(f'expected true or false, got {value!r}')
        return value
    if act.dest in _LIST_KEYS:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise TypeError('expected a string or a list of strings')
        return list(items)
    if act.dest == 'snapshots' and isinstance(value, list):
        value = ','.join(map(str, value))
    if isinstance(value, (list, dict)):
        raise TypeError(f'expected a single value, got {value!r}')
    v = act.type(str(value)) if act.type is not None else str(value)
    if act.choices is not None and v not in act.choices:
        raise ValueError(f'{v!r} is not one of {", ".join(map(str, act.choices))}')
    return v


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Flags over config file over defaults."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    cfg = load_config(ns.config, parser) if ns.config else {}
    for k, default in DEFAULTS.items():
        if getattr(ns, k) is None:
            setattr(ns, k, cfg.get(k, default))
    return ns


# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    """One target ready to run: observed (degraded) image, optional clean original and alignment."""
    name: str
    index: int
    target: np.ndarray                    # uint8 (h, w, 3) at the pipeline's output size
    clean: np.ndarray | None = None       # uint8 (R, R, 3), simulation only
    shown: np.ndarray | None = None       # target.png: the preprocessed input
    photo: np.ndarray | None = None       # --align: the original photo
    face: object = None                   # --align: AlignedFace
    photo_name: str = ''                  # --align: the photo's name (several faces share it)
    faces: int = 1                        # --align: faces restored from this photo
    after: str | None = None              # a video frame: the previous frame's name (it starts from its latent)
    video: str = ''                       # a video frame: the video target's name (with several faces: the face's)
    fps: float = 0.0                      # a video frame: the video's frame rate
    source: str = ''                      # a video frame: the video file
    tracks: int = 1                       # a video frame: faces followed through its video (--align --face all)


def _say(msg: str) -> None:
    """One line to stderr (errors, notes)."""
    print(msg, file=sys.stderr, flush=True)


def _versions(device) -> dict:
    """Versions, platform and device for run.json."""
    import torch
    import ganinv_core
    info = {'ganinv': ganinv_core.__version__, 'torch': torch.__version__, 'numpy': np.__version__,
            'python': platform.python_version(), 'platform': platform.platform(), 'device': str(device)}
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    return info


def _default_losses(network: str) -> list[str] | None:
    """None (the engine's default set: vgg16, latent-dist, noise-reg), except for the built-in random
    networks: no real VGG16 weights exist for them offline and a random VGG is no perceptual metric, so the
    pixel loss ``mse`` replaces ``vgg16`` there (a note is printed; LPIPS is then not reported)."""
    if str(network).startswith('random-'):
        return ['mse', 'latent-dist', 'noise-reg']
    return None


def _prepare(args, G, pipe, targets, problems) -> list:
    """Read, check and preprocess each target; problems (bad files, no face, mask size) are collected."""
    from ganinv_core.io import images, outputs, video
    res, out = G.img_resolution, pipe.output_size(G.img_resolution)
    keep_going = args.overwrite or args.resume   # existing outputs are replaced, or skipped by the caller
    jobs = []

    def fill(job, src, shape):   # the target (and clean original) of a photo, face or frame
        if args.simulate:
            job.clean = job.shown = images.square(src, res)
            job.target = _simulate(pipe, job.clean, job.name)
        else:
            job.shown = job.target = images.square(src, out)
        if args.mask:
            job.target = _apply_hole(job.target, images.load_mask(args.mask, shape, out))
        return job

    for i, t in enumerate(targets):
        try:
            if t.error:
                raise images.ImageError(t.error)
            if t.seed is None and video.is_video(t.source):
                jobs += _frames(args, t, i, res, fill, keep_going)
                continue
            photo = images.render_seed(G, t.seed)[0] if t.seed is not None else images.read_image(t.source)
            faces = [None]
            if args.align:
                faces = _align(photo, res, args.face, args.detector, t.source)
            names = [t.name if face is None or len(faces) == 1 else f'{t.name}_face{face.index}' for face in faces]
            if len(faces) > 1:   # one folder per face, and the photo with all of them
                outputs.check_free(args.outdir, [f'{t.name}_pasted.png', *names], keep_going)
            for name, face in zip(names, faces):
                src = face.crop if face is not None else photo
                jobs.append(fill(Job(name, i, target=None, photo=photo if face is not None else None, face=face,
                                     photo_name=t.name, faces=len(faces)), src, photo.shape[:2]))
        except ValueError as e:
            problems.append((t.name, str(e)))
            _say(f'error: {e}')
    return jobs


def _videos(jobs: list, record: dict) -> dict:
    """{video name: (its frames' names in order, its frame rate)} for every video target of the run whose frames
    are all restored (in this run or, resuming, an earlier one)."""
    import re
    out: dict = {}
    for name, fps in {j.video: j.fps for j in jobs if j.video}.items():
        frame = re.compile(rf'{re.escape(name)}_f\d{{4}}$')
        frames = sorted({j.name for j in jobs if j.video == name} | {k for k in record['targets'] if frame.match(k)})
        if all(record['targets'].get(f, {}).get('status') == 'ok' for f in frames):
            out[name] = (frames, fps)
    return out


def _face_videos(jobs: list, record: dict) -> dict:
    """{video name: (its file, its faces' video names, frame rate)} for every video of the run with several faces
    followed through it (``--align --face all``) whose frames are all restored."""
    out: dict = {}
    for j in jobs:
        if j.tracks > 1:
            faces = out.setdefault(j.photo_name, (j.source, [], j.fps))[1]
            if j.video not in faces:
                faces.append(j.video)
    return {name: v for name, v in out.items()
            if all(record['targets'].get(j.name, {}).get('status') == 'ok' for j in jobs if j.video in v[1])}


def _write_faces_video(outdir: Path, name: str, source: str, faces: list[str], fps: float) -> dict:
    """``<name>_pasted.mp4``: every frame of the video, each face followed through it pasted back where it was
    found (its composite where written, else its restoration); frames without a face as they were. Returns the
    video's entry for run.json."""
    import json

    from ganinv_core.io import align, images, video
    frames, _ = video.read_frames(source)
    writer = video.VideoWriter(outdir, fps=fps)
    try:
        for k, frame in enumerate(frames):
            for face in faces:
                d = outdir / f'{face}_f{k:04d}'
                if d.is_dir():
                    best = d / ('composite.png' if (d / 'composite.png').exists() else 'restored.png')
                    where = align.AlignedFace.from_json(json.loads((d / 'alignment.json').read_text()))
                    frame = align.paste_back(frame, images.read_image(best), where)
            writer.append(frame)
        writer.write(outdir / f'{name}_pasted.mp4')
    finally:
        writer.close()
    return {'frames': len(frames), 'fps': fps, 'faces': faces, 'pasted': f'{name}_pasted.mp4'}


def _write_video(outdir: Path, name: str, frames: list[str], fps: float, pasted: bool = True) -> dict:
    """``<name>.mp4`` (the restored frames, or their composites where written), ``<name>_comparison.mp4`` (input |
    restored) and, with ``--align`` (unless ``pasted`` is False: one of several faces), ``<name>_pasted.mp4`` (the
    whole frames, the face pasted back), at the source's frame rate; returns the video's entry for run.json, with
    its flicker: the mean absolute change between consecutive frames, in grey levels, of the input and of the
    restoration."""
    from ganinv_core.io import images, video
    pasted = pasted and all((outdir / f / 'pasted.png').is_file() for f in frames)
    writers = {k: video.VideoWriter(outdir, fps=fps) for k in ('', '_comparison') + (('_pasted',) if pasted else ())}
    change = {'input': [], 'restored': []}
    last = None
    try:
        for f in frames:
            d = outdir / f
            shown = images.read_image(d / 'target.png')
            rest = images.read_image(d / ('composite.png' if (d / 'composite.png').exists() else 'restored.png'))
            writers[''].append(rest)
            writers['_comparison'].append(video.side_by_side(images.square(shown, rest.shape[0], images.Image.NEAREST),
                                                             rest))
            if pasted:
                writers['_pasted'].append(images.read_image(d / 'pasted.png'))
            if last is not None:
                for k, (a, b) in zip(('input', 'restored'), zip(last, (shown, rest))):
                    change[k].append(float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()))
            last = (shown, rest)
        for suffix, w in writers.items():
            w.write(outdir / f'{name}{suffix}.mp4')
    finally:
        for w in writers.values():
            w.close()
    return {'frames': len(frames), 'fps': fps, 'video': f'{name}.mp4', 'comparison': f'{name}_comparison.mp4',
            **({'pasted': f'{name}_pasted.mp4'} if pasted else {}),
            'flicker': {k: float(np.mean(v)) if v else 0.0 for k, v in change.items()}}


def _frame_losses(args, losses) -> list:
    """The losses of a video's later frames: the run's, plus ``init-dist`` at ``--temporal`` (unless given or 0)."""
    from ganinv_core.engine import DEFAULT_LOSSES
    specs = list(losses if losses is not None else DEFAULT_LOSSES)
    named = {s.split(':')[0].strip() if isinstance(s, str) else getattr(s, 'name', '') for s in specs}
    return specs + ([f'init-dist:weight={args.temporal}'] if args.temporal > 0 and 'init-dist' not in named else [])


def _previous_latents(outdir: Path, batch: list) -> dict:
    """The restored latents (w and noise) of the frames before a batch's frames, stacked as ``invert``'s init."""
    from ganinv_core.io.latents import load_latent
    prev = [load_latent(outdir / j.after / 'projected_w.npz') for j in batch]
    layers = set.intersection(*(set(p['noise']) for p in prev))
    return {'w': np.concatenate([p['w'] for p in prev]),
            'noise': {k: np.concatenate([p['noise'][k] for p in prev]) for k in sorted(layers)}}


def _frames(args, t, index: int, res: int, fill, keep_going: bool) -> list:
    """The jobs of a video target: one per frame, named ``<name>_f0000`` ..., each after the previous one; with
    ``--align --face all`` and several faces, one per frame of each face, ``<name>_face<k>_f0000`` ..."""
    from ganinv_core.io import outputs, video
    if args.align and args.face not in ('largest', 'all'):
        raise ValueError(f'{t.source}: --align follows the largest face or all faces through a video; '
                         f'--face {args.face} works on photos only')
    outputs.check_free(args.outdir, [t.name + s for s in ('.mp4', '_comparison.mp4', '_pasted.mp4')], keep_going)
    frames, fps = video.read_frames(t.source)
    tracks = None
    if args.align:
        from ganinv_core.io import align
        try:   # the largest face, or each face, of each frame, its landmarks smoothed through the video
            tracks = align.align_video_faces(frames, res, args.detector) if args.face == 'all' else None
            if tracks is None or len(tracks) == 1:
                tracks = [dict(enumerate(align.align_video(frames, res, args.detector)))]
        except align.AlignError as e:
            raise ValueError(f'{t.source}: {e}') from None
    jobs = []
    for i, faces in enumerate(tracks or [dict.fromkeys(range(len(frames)))]):
        name = t.name if tracks is None or len(tracks) == 1 else f'{t.name}_face{i}'
        if name != t.name:
            outputs.check_free(args.outdir, [name + s for s in ('.mp4', '_comparison.mp4')], keep_going)
        names = [f'{name}_f{k:04d}' for k in faces]
        outputs.check_free(args.outdir, names, keep_going)
        for n, (k, face) in enumerate(faces.items()):
            frame = frames[k]
            jobs.append(fill(Job(names[n], index, target=None, after=names[n - 1] if n else None, video=name, fps=fps,
                                 photo=None if face is None else frame, face=face, photo_name=t.name,
                                 source=t.source, tracks=len(tracks or ())), face.crop if face else frame,
                             frame.shape[:2]))
    return jobs


def _align(photo, res, which, detector, source):
    """The aligned faces of one photo; no face, a bad detector spec or a missing extra (the detector's own
    error says how to install it) is a ValueError naming ``source``."""
    from ganinv_core.io import align
    try:
        return align.align_faces(photo, res, detector=detector, which=which)
    except ValueError as e:
        raise ValueError(f'{source}: {e}') from None


def _simulate(pipe, clean: np.ndarray, name: str) -> np.ndarray:
    """Degrade one clean image (batch of one, so the result does not depend on batching); random degradations
    (noise) draw from their seed and the target's name (its own draw, the same in every run)."""
    import zlib

    import torch
    from ganinv_core.hooks import PluginError, blame
    from ganinv_core.io.images import to_tensor, to_uint8
    with torch.no_grad(), blame('degrading the clean photo (--simulate)', PluginError):
        return to_uint8(pipe.simulate(to_tensor(clean), zlib.crc32(name.encode())))[0]


def _apply_hole(img: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Paint the unknown pixels black (-1), as the inpainting degradation does."""
    return np.where(known[..., None] > 0.5, img, 0).astype(np.uint8)


def _file_mask(known: np.ndarray):
    """The inpainting degradation of a ``--mask`` file: ``known`` (R, R), 1 = known pixel; holes black."""
    import torch
    from ganinv_core.hooks import Degradation

    class FileMask(Degradation):
        name = 'mask-file'
        help = 'inpainting with a fixed mask read from a file (--mask)'
        cuda_graph_safe = True   # its mask is a buffer, moved to the device with the pipeline
        affine = True

        def __init__(self, m):
            super().__init__()
            self.register_buffer('m', torch.as_tensor(m, dtype=torch.float32)[None, None])

        def forward(self, x):
            return self.m * (x + 1) - 1

        def mask(self, x):
            return self.m.expand(x.shape[0], 1, -1, -1)

    return FileMask(known)


def _composite_kind(pipe, res: int) -> str | None:
    """What ``composite.png`` keeps of the target: ``'pixels'`` where every degradation only hides pixels
    (inpainting, ``--mask``), ``'luminance'`` where the others are ``grayscale`` stages, ``'measurement'`` where every
    stage is affine otherwise (blur, area downsampling): degraded, the composite gives back the target.
    ``'low frequencies'`` where a stage is not affine (JPEG, a clamped resize) or adds noise: no image gives the
    target back exactly, but its local means are matched. None without degradations."""
    import torch
    from ganinv_core.hooks import get_registry
    grey = get_registry().degradations.get('grayscale')
    stages = list(pipe.stages)
    if not stages:
        return None
    if any(d.simulate_only or not d.affine for d in stages):
        return 'low frequencies'
    x = torch.zeros(1, 3, res, res)
    if pipe.output_size(res) != res or any(d.mask(x) is None and type(d) is not grey for d in stages):
        return 'measurement'
    return 'luminance' if any(type(d) is grey for d in stages) else 'pixels'


def _composites(pipe, kind: str, observed: np.ndarray, restored: np.ndarray, mask, device) -> list[tuple]:
    """Per target ``(kind, composite uint8 HxWx3, residual)``: each restoration moved the least it takes to agree with
    its target at the known pixels (``mask`` [N|1,1,h,w], 1 = known, or None), as ``engine.consistent`` does it, the
    whole batch at once on the run's ``device``: the target's pixels pasted in; or its luminance, every channel of a
    pixel shifted by the same amount (keeping G's colour); or, for a blur or a resize, a restoration that degrades
    back to the target; or, for the rest, one whose degraded local means are the target's
    (``engine.match_low_frequencies``). ``residual``: the RMS of M (A x - y) over the known pixels, in grey levels,
    of the restoration and of the composite."""
    import torch
    from ganinv_core.engine import consistent, match_low_frequencies
    from ganinv_core.io.images import to_tensor, to_uint8
    pipe = pipe.to(device)
    y, x = to_tensor(observed).to(device), to_tensor(restored).to(device)
    known = torch.ones_like(y[:, :1]) if mask is None else mask.to(device).expand(len(y), 1, -1, -1)
    comp = to_uint8((match_low_frequencies if kind == 'low frequencies' else consistent)(pipe, x, y, known))

    @torch.no_grad()
    def rms(img):   # [N]
        mean_sq = ((pipe(img) - y).square() * known).sum((1, 2, 3)) / (3 * known.sum((1, 2, 3)))
        return (mean_sq.sqrt() * 127.5).tolist()
    return [(kind, c, {'restored': a, 'composite': b})
            for c, a, b in zip(comp, rms(x), rms(to_tensor(comp).to(device)))]


def _write_target(args, outdir, job: Job, res, i: int, frames, snaps, composite, pasted: dict,
                  arcface=None) -> dict:
    """Every output file of one target, staged then moved into ``outdir/job.name``.

    Args:
        composite: None, or ``composite.png`` (what it keeps of the target, the image, its residuals: from
            ``_composites``); its metrics against the clean original are recorded, when known.
        pasted: --align with several faces per photo: {photo name: (photo with the faces so far, count)};
            once every face of a photo is restored, ``<photo name>_pasted.png`` holds them all.
    """
    from ganinv_core import metrics as qm
    from ganinv_core.io import images, latents, outputs, plots
    restored = images.to_uint8(res.images[i:i + 1])[0]
    observed = job.target
    metrics = dict(res.metrics[i], target=job.name, mode='simulate' if args.simulate else 'restore',
                   precision=res.precision, step=res.step_mode)
    with outputs.target_folder(outdir, job.name) as d:
        outputs.write_png(d / 'target.png', job.shown)
        outputs.write_png(d / 'degraded.png', observed)
        outputs.write_png(d / 'restored.png', restored)
        panels = ([('original', job.clean)] if job.clean is not None else []) + \
            [('degraded', observed), ('restored', restored)]
        best = restored   # what goes back into the photo (--align): the composite, where there is one
        if composite:
            keeps, comp, residual = composite
            outputs.write_png(d / 'composite.png', comp)
            panels.append(('composite', comp))
            best = comp
            if job.clean is not None:
                a, b = images.to_tensor(comp), images.to_tensor(job.clean)
                metrics['composite'] = {'psnr': float(qm.psnr(a, b)[0]), 'ssim': float(qm.ssim(a, b)[0])}
                if arcface is not None:
                    dev = next(arcface.parameters()).device
                    metrics['composite']['identity'] = float(qm.identity(a.to(dev), b.to(dev), arcface)[0])
            metrics.setdefault('composite', {}).update(keeps=keeps, residual=residual)
        plots.comparison(panels, d / 'comparison.png')
        if args.landmarks:
            metrics['landmarks'] = _landmark_errors(args._landmark_detector, job.clean, observed, restored,
                                                    composite[1] if composite else None)
        if 'restarts' in res.extra:   # every start's restoration, the kept one marked, and where they disagree
            info = metrics['restarts']
            starts = images.to_uint8(res.extra['restarts']['images'][:, i])
            spread = (starts.astype(np.float64) @ np.array(qm.LUMA)).std(0)   # of the luminance, 0-255
            info['spread'] = {'mean': float(spread.mean()), 'max': float(spread.max())}
            plots.comparison([(f'start {k}{" (kept)" * (k == info["chosen"])}: {v:.4g}', img)
                              for k, (v, img) in enumerate(zip(info['losses'], starts))]
                             + [(f'spread (max {spread.max():.0f})', plots.heat(spread))], d / 'restarts.png', cols=8)
        latents.save_latent(d / 'projected_w.npz', res.w[i:i + 1], {k: v[i:i + 1] for k, v in res.noise.items()},
                            res.latent_space)
        if 'tuned' in res.extra:   # --save-generator: with projected_w.npz, it renders restored.png again
            from ganinv_core.weights import save_generator
            save_generator(res.extra['tuned'][i], d / 'generator.safetensors')
        plots.loss_plot({k: v[:, i] for k, v in res.history.items()}, d / 'loss.png', job.name)
        for step, img in sorted(snaps.items()):
            outputs.write_png(d / f'step{step:04d}.png', img)
        if frames is not None:
            frames.write(d / 'progress.mp4')
        if job.face is not None:
            from ganinv_core.io import align
            outputs.write_png(d / 'pasted.png', align.paste_back(job.photo, best, job.face))
            if job.faces > 1:
                with _PASTE_LOCK:   # the faces of one photo may be restored on different devices at once
                    so_far, count = pasted.get(job.photo_name, (job.photo, 0))
                    so_far, count = align.paste_back(so_far, best, job.face), count + 1
                    pasted[job.photo_name] = (so_far, count)
                    if count == job.faces:
                        outputs.write_png(Path(outdir) / f'{job.photo_name}_pasted.png', so_far)
            outputs.write_json(d / 'alignment.json', job.face.to_json())
            metrics['alignment'] = 'alignment.json'
        outputs.write_json(d / 'metrics.json', metrics)
    return metrics


def _landmark_errors(detector, clean, observed, restored, composite) -> dict:
    """``metrics.json``'s ``landmarks``: the landmark error (``metrics.nme``) of the restoration and the composite
    against the clean original and, as the "before", of the degraded photo (Lanczos-resized to the original's size);
    without an original (restoring a real photo), of the restoration and the composite against the photo itself
    (how far the restoration moved the face's shape). One that cannot be scored (no face found) is None, with the
    reason in ``errors``."""
    from PIL import Image

    from ganinv_core.metrics import landmarks, nme
    size = restored.shape[1::-1]
    photo = np.asarray(Image.fromarray(observed.squeeze()).convert('RGB').resize(size, Image.LANCZOS))
    images = {'restored': restored, **({'composite': composite} if composite is not None else {})}
    if clean is not None:
        images = {'degraded': photo, **images}
    out, errors = {}, {}
    with _LANDMARK_LOCK:
        try:
            ref = landmarks(photo if clean is None else clean, detector)
        except ValueError as e:
            why = f'{"photo" if clean is None else "original"}: {e}'
            return {**dict.fromkeys(images), 'errors': dict.fromkeys(images, why)}
        for key, img in images.items():
            try:
                out[key] = nme(landmarks(img, detector), ref)
            except ValueError as e:
                out[key], errors[key] = None, str(e)
    return {**out, **({'errors': errors} if errors else {})}


def _run_batch(args, G, pipe, losses, batch: list[Job], outdir, bar_desc: str, init, pasted: dict, batches=None,
               position: int | None = None, steps: int | None = None, lr: float | None = None,
               restarts: int | None = None, arcface=None, init_search: int | None = None) -> list[dict]:
    """Invert one batch (progress bar, video frames, snapshots through the callback), then write its targets.

    Args:
        steps, lr, restarts: this batch's (default: the run's; a video's later frames have their own).
        batches: the run's ``_batches.Batches``: the batch stops (``Stopped``) at a progress report once it is set
            to stop.
        position: None, or the line of this worker's progress bar among several (cleared when done).
    """
    from ganinv_core.engine import invert
    from ganinv_core.io import images, video
    n = len(batch)
    steps, lr = steps or args.steps, args.lr if lr is None else lr
    snapshots = [s for s in args.snapshots if s <= steps]
    frames = [video.VideoWriter(outdir) for _ in batch] if args.save_video else None
    snaps: list[dict] = [dict() for _ in batch]
    shown = [images.square(j.target, G.img_resolution, images.Image.NEAREST) for j in batch]
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=bar_desc, unit='step', leave=position is None, file=sys.stderr,
                   dynamic_ncols=True, position=position)

    def on_progress(p):
        if batches is not None:
            batches.check()
        want_snap = p.step in snapshots
        if frames is not None or want_snap:
            now = images.to_uint8(p.render())
            for k in range(n):
                if frames is not None:
                    frames[k].append(video.side_by_side(shown[k], now[k]))
                if want_snap:
                    snaps[k][p.step] = now[k]
        if bar is not None and p.losses is not None:
            bar.update(p.step - bar.n)
            bar.set_postfix({k: f'{float(np.mean(v)):.4g}' for k, v in p.losses.items()} | {'it/s': f'{p.rate:.2f}'})

    def on_tune(i, step):   # pivotal tuning, one photo after another: the bar restarts at 0 of tune x photos
        if batches is not None:
            batches.check()
        if bar is not None:
            if i == 0 and step == 1:
                bar.reset(total=args.tune * n)
                bar.set_description(f'{bar_desc} tuning')
                bar.set_postfix_str('')   # the latent search's losses
            bar.update(1)

    clean = images.to_tensor(np.stack([j.clean for j in batch])) if args.simulate else None
    try:
        res = invert(G, images.to_tensor(np.stack([j.target for j in batch])), degradations=pipe, losses=losses,
                     steps=steps, latent_space=args.latent_space, optimize_noise=not args.no_noise_opt,
                     lr=lr, init=init, seed=args.seed, precision=args.precision, callbacks=[on_progress],
                     clean=clean, indices=[j.index for j in batch], report_steps=snapshots,
                     modconv=args.modconv, cuda_graph=args.cuda_graph, compile=args.compile,
                     channels_last=args.channels_last, polish=args.polish, restarts=restarts or args.restarts,
                     arcface=arcface, init_search=init_search or args.init_search, tune=args.tune,
                     tune_lr=args.tune_lr, on_tune=on_tune, keep_tuned=args.save_generator)
        kind = _composite_kind(pipe, G.img_resolution)
        composites = _composites(pipe, kind, np.stack([j.target for j in batch]), images.to_uint8(res.images),
                                 res.mask, next(G.parameters()).device) if kind else [None] * n
        return [_write_target(args, outdir, j, res, i, frames[i] if frames else None, snaps[i], composites[i], pasted,
                              arcface)
                for i, j in enumerate(batch)]
    finally:
        if bar is not None:
            bar.close()
        for f in frames or ():   # a failed or interrupted batch: its unfinished videos' temporary files go
            f.close()


def _summary(name: str, outdir, m: dict) -> str:
    """The line printed per finished target: its folder and PSNR before and after."""
    def db(x):
        return 'n/a' if x is None else ('inf' if x == float('inf') else f'{x:.2f} dB')
    line = f'{name}: {Path(outdir) / name}/'
    if 'vs_clean' in m:
        line += f'  PSNR before {db(m["degraded_vs_clean"]["psnr"])}, after {db(m["vs_clean"]["psnr"])}'
        if 'hole' in m:
            line += f' (in the hole: {db(m["hole"]["psnr_degraded"])} -> {db(m["hole"]["psnr_restored"])})'
        if 'composite' in m:
            line += f', composite {db(m["composite"]["psnr"])}'
    else:
        line += f'  PSNR vs target {db(m["vs_target"]["psnr"])}'
    return line


def run(args) -> int:
    """The main job on parsed arguments; returns the exit code."""
    from ganinv_core.engine import InversionError
    from ganinv_core.io import images, latents, outputs

    if not args.target:
        raise ConfigError('--target: give at least one image file, folder or seed:N')
    if not args.network:
        raise ConfigError('--network: give a network (path, URL, short name such as ffhq, or random-64)')
    args.frame_steps = args.frame_steps or max(1, args.steps // 4)
    args.frame_lr = args.lr / 4 if args.frame_lr is None else args.frame_lr
    late = [s for s in args.snapshots if s > args.steps]
    if late:
        raise ConfigError(f'--snapshots: step {late[0]} is past the last step ({args.steps}, --steps)')
    devices = _devices(args.device)
    device = devices[0]
    if args.compile and len(devices) > 1:   # torch.compile's caches and guards are not made for several threads
        raise ConfigError(f'--compile: works with one device; --device names {len(devices)}')
    if args.save_video:
        from ganinv_core.io.video import check_available
        check_available()
    from ganinv_core.weights import load_generator
    G = load_generator(args.network, device=device)
    from ganinv_core.engine._pipeline import build_losses, pipeline
    specs = list(args.degradation or [])
    pipe = pipeline(specs)
    if not args.simulate:
        bad = [d.name for d in pipe.stages if getattr(d, 'simulate_only', False)]
        if bad:
            raise ConfigError(f'--degradation {bad[0]!r}: works in simulation only; add --simulate')
    if args.mask:
        if args.simulate or args.align:
            raise ConfigError(f'--mask: marks damage in a real photo; it cannot be combined with '
                              f'{"--simulate" if args.simulate else "--align"}')
    if args.landmarks:   # built and run once now: an unknown detector or a missing extra stops the run here
        from ganinv_core.hooks import get_registry
        try:
            args._landmark_detector = get_registry().build_detector(args.landmarks)
            args._landmark_detector.detect(np.zeros((32, 32, 3), np.uint8))
        except ValueError as e:   # unknown, bad parameters, or its extra not installed
            raise ConfigError(f'--landmarks: {e}') from None
    if args.init and args.restarts > 1:
        raise ConfigError('--restarts: the starts are w_avg and random latents; it cannot be combined with --init')
    if args.init_search > 1 and (args.init or args.restarts > 1):
        raise ConfigError(f'--init-search: searches for the start; it cannot be combined with '
                          f'{"--init" if args.init else "--restarts"}')
    if args.save_generator and not args.tune:
        raise ConfigError('--save-generator: only a tuned generator is written; give --tune STEPS too')
    if args.tune and args.restarts > 1:
        raise ConfigError('--tune: not with --restarts; tune the chosen start in a second run from its latent (--init)')
    init = latents.load_latent(args.init) if args.init else None
    losses = args.loss if args.loss else _default_losses(args.network)
    built = build_losses(losses)   # a bad --loss spec stops the run here, before any work
    # the identity metric's network: --arcface, else $GANINV_ARCFACE, else the identity loss's (the same object)
    arcface = args.arcface or os.environ.get('GANINV_ARCFACE') or \
        next((t.source for t in built if getattr(t, 'name', '') == 'identity'), None)
    if arcface:   # loaded now, on every device, so that a bad file stops the run before any work too
        from ganinv_core.nets.arcface import shared_arcface
        arcface = {str(d): shared_arcface(arcface, d) for d in devices}
    if losses is not None and not args.loss and not args.quiet:
        _say(f'note: {args.network} is a random-weight demo network: default losses {", ".join(losses)} '
             '(mse instead of vgg16; pass --loss to choose)')
    targets = images.expand_targets(list(args.target))
    outdir = Path(args.outdir)
    before = _resumable(args, outdir) if args.resume else None
    outputs.check_free(outdir, [t.name for t in targets if not t.error], args.overwrite or args.resume)

    problems: list[tuple[str, str]] = []
    if args.mask:  # the mask's geometry is the same for every photo of its size: one degradation for all
        pipe = _with_mask(args, G, pipe, targets)
    jobs = _prepare(args, G, pipe, targets, problems)
    record = {'command': sys.argv[:1] + (args._argv or []), 'cwd': os.getcwd(), 'config': _config(args),
              'versions': _versions(device), 'started': datetime.datetime.now().isoformat(timespec='seconds'),
              'status': 'running', 'targets': {}}
    every = jobs   # a video's faces are pasted together from all their frames, those of earlier runs too
    if args.resume:
        jobs = _skip_done(jobs, outdir, record, before)
    for name, err in problems:
        record['targets'][name] = {'status': 'bad input', 'error': err}
    outdir.mkdir(parents=True, exist_ok=True)
    outputs.write_json(outdir / 'run.json', record)
    code = EXIT_BAD_INPUT if problems else EXIT_OK
    t0 = time.perf_counter()
    pasted: dict = {}
    listed = list(record['targets'])   # resumed and unreadable targets, before the batches' own

    def follows(job) -> bool:   # a video frame whose previous frame is restored: it starts from its latent
        return job.after is not None and (outdir / job.after / 'projected_w.npz').is_file()
    batches = Batches(jobs, after=lambda j: j.after, kind=follows)
    frame_losses = _frame_losses(args, losses)
    def own_pipe():   # another device's degradations, built from the specs again (a plugin may not copy)
        extra = pipeline(specs)
        return type(extra)(list(extra.stages) + [copy.deepcopy(pipe.stages[-1])]) if args.mask else extra
    workers = [(device, G, pipe)] + [(d, load_generator(args.network, device=d), own_pipe()) for d in devices[1:]]
    outcome = {'code': code}

    def work(i: int) -> None:   # one device's share of the batches
        dev, G_i, pipe_i = workers[i]
        where = f'{dev}' if len(workers) == 1 else f'{dev} (worker {i + 1})'
        bs = args.batch_size
        while not batches.stop.is_set():
            batch, desc = batches.take(bs)
            if not batch:
                return
            names, ms, error, oom = ", ".join(j.name for j in batch), None, '', False
            try:
                plan = dict(losses=losses, init=init)
                if follows(batch[0]):   # later video frames: from the previous frame's latent, shorter, gentler
                    plan = dict(losses=frame_losses, init=_previous_latents(outdir, batch), steps=args.frame_steps,
                                lr=args.frame_lr, restarts=1, init_search=1)
                if arcface:
                    plan['arcface'] = arcface[str(dev)]
                ms = _run_batch(args, G_i, pipe_i, plan.pop('losses'), batch, outdir,
                                desc if len(workers) == 1 else f'{where}: {desc}', plan.pop('init'), pasted, batches,
                                None if len(workers) == 1 else i, **plan)
            except (InversionError, latents.LatentFileError) as e:
                error = str(e)
            except Exception as e:   # noqa: BLE001 - only out-of-memory is handled; the rest re-raised as is
                if not out_of_memory(e):
                    raise
                error, oom = f'out of memory on {where} ({exc_line(e, 200)})', True
            if oom:
                _free_memory(dev)   # the failed batch's tensors are garbage once its exception is gone
                if len(batch) > 1:  # images never interact: halving the batch changes no result
                    bs = len(batch) // 2
                    note = f'{names}: out of memory on {where} with {len(batch)} photos at once; ' \
                           f'continuing {bs} at a time'
                    with batches.lock:
                        record.setdefault('notes', []).append(note)
                    _say(f'note: {note}')
                    batches.put_back(batch)
                    continue
                error = f'{error}; one photo at {G.img_resolution}x{G.img_resolution} does not fit: free memory ' \
                        'on the device, or try --precision bf16 (about half the memory of fp32)'
            with batches.lock:
                if ms is None:
                    _say(f'error: {names}: {error}')
                    for j in batch:
                        record['targets'][j.name] = {'status': 'failed', 'error': error}
                    outcome['code'] = EXIT_FAIL if outcome['code'] == EXIT_OK else outcome['code']
                for j, m in zip(batch, ms or ()):
                    record['targets'][j.name] = {'status': 'ok', 'folder': j.name}
                    print(_summary(j.name, outdir, m), flush=True)
            batches.done(batch)   # the frames that follow these may go

    try:
        try:
            run_workers(batches, devices, work)
        finally:   # the record in the order of the targets, whichever device finished first
            rank = {name: k for k, name in enumerate(listed + [j.name for j in jobs])}
            record['targets'] = dict(sorted(record['targets'].items(), key=lambda kv: rank.get(kv[0], len(rank))))
        code = outcome['code']
    except KeyboardInterrupt:
        record['status'] = 'interrupted'
        record['wall_time_s'] = time.perf_counter() - t0
        outputs.write_json(outdir / 'run.json', record)
        _write_table(outdir, record)
        _say(f'interrupted: {sum(v["status"] == "ok" for v in record["targets"].values())} finished target(s) '
             f'kept in {outdir}')
        return EXIT_INTERRUPTED
    assemble = [(name, len(frames), lambda name=name, frames=frames, fps=fps: _write_video(
        outdir, name, frames, fps, pasted=not any(j.tracks > 1 for j in jobs if j.video == name)))
        for name, (frames, fps) in _videos(jobs, record).items()]
    assemble += [(name, None, lambda name=name, v=v: _write_faces_video(outdir, name, *v))
                 for name, v in _face_videos(every, record).items()]
    for name, count, write in assemble:
        videos = record.setdefault('videos', {})
        try:
            videos[name] = write()
        except (OSError, RuntimeError, ValueError) as e:   # the frames are kept; only the assembled video is missing
            videos[name] = {'frames': count, 'error': exc_line(e)}
            _say(f'error: {name}: its {f"{count} " if count else ""}frames are restored, but the video could not '
                 f'be written ({exc_line(e)})')
            code = EXIT_FAIL if code == EXIT_OK else code
    record['status'] = 'done' if code == EXIT_OK else 'done with errors'
    record['wall_time_s'] = time.perf_counter() - t0
    outputs.write_json(outdir / 'run.json', record)
    mean = _write_table(outdir, record)
    if mean:
        print(mean, flush=True)
    print(f'outputs: {outdir}/ (run.json, metrics.csv, one folder per target)', flush=True)
    return code


def _write_table(outdir: Path, record: dict) -> str | None:
    """``metrics.csv``: a row per target of the run (and of the runs it resumed); returns the mean line."""
    from ganinv_core.io import outputs, summary
    table = summary.rows(outdir, record['targets'])
    outputs.write_bytes(outdir / 'metrics.csv', summary.to_csv(table).encode())
    return summary.mean_line(table)


def _free_memory(device) -> None:
    """Return a failed batch's memory: collect its tensors, then release the allocator's cached blocks (on a GPU
    another worker shares, between its graph captures)."""
    from .engine._graphs import free_memory
    free_memory(device)


def _devices(name: str | None) -> list:
    """``--device`` -> torch.devices, each checked by placing a tensor on it (default cuda if available, else cpu).
    A comma-separated list shares the run's batches out, one worker per entry (``cuda:0,cuda:1``; a device named
    twice gets two workers)."""
    import torch
    from ._devices import usable_device
    if name is None:
        return [torch.device('cuda' if torch.cuda.is_available() else 'cpu')]
    parts = [p.strip() for p in str(name).split(',')]
    if not all(parts):
        raise ConfigError(f'--device {name!r}: an empty entry in the list; give e.g. cuda:0,cuda:1')
    return [usable_device(p, '--device') for p in parts]


def _with_mask(args, G, pipe, targets):
    """Add the ``--mask`` degradation, sized from the first readable target photo."""
    from ganinv_core.io import images
    out = pipe.output_size(G.img_resolution)
    for t in targets:
        if t.error or t.seed is not None:
            continue
        try:
            shape = images.read_image(t.source).shape[:2]
            known = images.load_mask(args.mask, shape, out)
        except images.ImageError:
            continue  # reported per target by _prepare
        return type(pipe)(list(pipe.stages) + [_file_mask(known)])  # the mask stage last
    return pipe


# the options that decide what a target's outputs are: a resumed run must keep them
_RESULT_KEYS = ('network', 'degradation', 'loss', 'mask', 'simulate', 'steps', 'lr', 'latent-space', 'no-noise-opt',
                'init', 'restarts', 'precision', 'polish', 'seed', 'align', 'face', 'detector', 'snapshots',
                'save-video', 'frame-steps', 'frame-lr', 'temporal')


def _resumable(args, outdir: Path) -> dict | None:
    """``--resume``: the earlier run's record in ``outdir`` (None when there is none), checked to have been made with
    the same result-deciding options as this run."""
    import json
    if args.overwrite:
        raise ConfigError('--resume: keeps the targets already restored, --overwrite replaces them; give one')
    path = outdir / 'run.json'
    if not path.is_file():
        return None
    try:
        before = json.loads(path.read_text())
        old = before['config']
        if not isinstance(old, dict) or not isinstance(before.get('targets', {}), dict):
            raise TypeError('no config table')
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f'{path}: cannot resume from it: not a run.json of ganinv-run ({exc_line(e)})') from None
    now = _config(args)
    for key in _RESULT_KEYS:
        if old.get(key) != now.get(key):
            raise ConfigError(f'--resume: {path} was made with {key} = {old.get(key)!r}, this run has '
                              f'{now.get(key)!r}; give the same options, or --overwrite to start again')
    return before


def _skip_done(jobs: list, outdir: Path, record: dict, before: dict | None) -> list:
    """``--resume``: the jobs still to run. A target whose folder exists is done (folders appear complete or not
    at all); a photo of several faces is done when every face and its ``_pasted.png`` are, else all its faces run
    again. ``record`` carries the earlier run's targets and lists the skipped ones as done."""
    if before is not None:
        record['targets'].update(before.get('targets', {}))
        record['resumed_from'] = before.get('started')
    photos: dict[str, list] = {}
    for j in jobs:   # the faces of one photo go together; anything else (a photo, a video frame) alone
        photos.setdefault(j.photo_name if j.faces > 1 else j.name, []).append(j)
    todo, skipped = [], 0
    for name, group in photos.items():
        done = all((outdir / j.name).is_dir() for j in group) and (
            len(group) == 1 or (outdir / f'{name}_pasted.png').is_file())
        if done:
            skipped += len(group)
            for j in group:
                record['targets'][j.name] = {'status': 'ok', 'folder': j.name}
        else:
            todo += group
    _say(f'resuming {outdir}: {skipped} target(s) restored before, {len(todo)} to go')
    return todo


def _config(args) -> dict:
    """The resolved configuration, as TOML-able keys (enough for --config to rerun it)."""
    skip = {'config', 'list_plugins', 'doctor', 'convert', 'resume'}   # and what the run keeps on args (_name)
    return {k.replace('_', '-'): v for k, v in vars(args).items()
            if k not in skip and not k.startswith('_') and v is not None}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ganinv-run``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse(argv)
        args._argv = argv
        if args.doctor:
            from ganinv_core.ops import doctor_report
            print(doctor_report())
            return EXIT_OK
        if args.list_plugins:
            from ganinv_core.hooks import format_plugin_list
            print(format_plugin_list())
            return EXIT_OK
        if args.convert:
            return convert_main(list(args.convert) + (['--overwrite'] if args.overwrite else []))
        return run(args)
    except KeyboardInterrupt:
        _say('interrupted')
        return EXIT_INTERRUPTED
    except ValueError as e:  # every input error of ganinv is a ValueError subclass with a one-line message
        _say(f'error: {e}')
        return EXIT_BAD_INPUT
    except OSError as e:     # the system refused a read or write (disk full, a folder that cannot be made)
        _say(f'error: {e}')
        return EXIT_FAIL


def convert_main(argv: list[str] | None = None) -> int:
    """Entry point of ``ganinv-convert SRC DST [--overwrite]``: any supported network -> .safetensors."""
    p = _Parser(prog='ganinv-convert', description='Convert a StyleGAN2 network to .safetensors.')
    p.add_argument('src', help='.pkl (NVIDIA, TF or PyTorch), .safetensors, URL or short name')
    p.add_argument('dst', help='output .safetensors file')
    p.add_argument('--overwrite', action='store_true', help='replace DST if it exists')
    try:
        args = p.parse_args(sys.argv[1:] if argv is None else argv)
        from ganinv_core import weights
        weights.convert(args.src, args.dst, overwrite=args.overwrite)
    except ValueError as e:
        _say(f'error: {e}')
        return EXIT_BAD_INPUT
    print(f'wrote {args.dst}')
    return EXIT_OK


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
