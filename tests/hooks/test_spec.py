"""Spec strings and typed parameters: parsing, coercion, and the one-line errors that list what is valid."""
import math

import pytest

from ganinv_core.hooks import Degradation, Param, Registry, SpecError, hookimpl, parse_spec


class Toy(Degradation):
    name = 'toy'
    help = 'test degradation'
    params = (Param('k', int, 3, 'an int'), Param('s', float, 1.0, 'a float'),
              Param('on', bool, False, 'a flag'), Param('mode', str, 'a', 'a choice', ('a', 'b')))

    def forward(self, x):
        return x


class _Plugin:
    @hookimpl
    def ganinv_degradations(self):
        return [Toy]


@pytest.fixture
def reg():
    return Registry({'toy-plugin': _Plugin()}, entry_points=False)


def test_parse_spec():
    assert parse_spec('blur') == ('blur', {})
    assert parse_spec(' blur : sigma=2 , size = 5 ') == ('blur', {'sigma': '2', 'size': '5'})
    assert parse_spec('x:std-weight=1') == ('x', {'std_weight': '1'})


@pytest.mark.parametrize('spec, match', [('', 'expected'), ('Blur', 'not a valid name'), ('b:sigma', 'not key=value'),
                                         ('b:a=1,a=2', 'given twice'), ('b:=3', 'not key=value')])
def test_parse_spec_errors(spec, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(spec)


def test_build_typed_values(reg):
    d = reg.build_degradation('toy:k=5,s=2,on=yes,mode=b')
    assert (d.k, d.s, d.on, d.mode) == (5, 2.0, True, 'b') and type(d.s) is float
    assert reg.build_degradation('toy').config == {'k': 3, 's': 1.0, 'on': False, 'mode': 'a'}
    assert reg.build_degradation('toy:k=5', k=7).k == 7            # keyword overrides win
    assert reg.build_degradation(d.spec()).config == d.config       # round trip


@pytest.mark.parametrize('spec, match', [
    ('tyo', r"unknown degradation 'tyo'; available: toy"),
    ('toy:q=1', r"unknown key 'q'; valid keys: k \(int, default 3\), s \(float"),
    ('toy:k=1.5', r"k='1.5' is not a valid int"),
    ('toy:s=abc', r"s='abc' is not a valid float"),
    ('toy:s=inf', r"s='inf' is not a finite number; expected s \(float"),
    ('toy:s=NaN', r"s='NaN' is not a finite number"),
    ('toy:on=maybe', r"is not a valid bool"),
    ('toy:mode=c', r"mode='c' is not one of a\|b"),
])
def test_build_errors_list_what_is_valid(reg, spec, match):
    with pytest.raises(SpecError, match=match) as e:
        reg.build_degradation(spec)
    assert '\n' not in str(e.value) and isinstance(e.value, ValueError)


def test_python_values_are_checked():
    assert Toy(k=4.0, s=2).config['k'] == 4
    for bad in (dict(k=1.5), dict(k=True), dict(s='x'), dict(on=2), dict(s=float('nan')), dict(s=-math.inf)):
        with pytest.raises(SpecError):
            Toy(**bad)


def test_param_type_must_be_simple():
    with pytest.raises(SpecError, match='type must be'):
        Param('x', list, [], 'no')


def test_builtin_range_checks_name_the_key():
    from ganinv_degradations import Blur, Downsample, Inpaint
    from ganinv_losses import SSIM
    for cls, kw, key in [(Downsample, dict(factor=64), 'factor'), (Blur, dict(sigma=-1.0), 'sigma'),
                         (Blur, dict(size=4), 'size'), (Inpaint, dict(mode='box', box='0.5:0:0.2:1'), 'box'),
                         (Inpaint, dict(mode='file', path='/no/such.png'), 'path'),
                         (Inpaint, dict(mode='strokes', strokes=-1), 'strokes'),
                         (Inpaint, dict(mode='strokes', width=0.0), 'width'), (SSIM, dict(window=4), 'window')]:
        with pytest.raises(SpecError, match=f"'{cls.name}': {key}="):
            cls(**kw)
