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


class Bounded(Degradation):
    name = 'bounded'
    help = 'test: bounded parameters'
    params = (Param('n', int, 2, 'both ends', bounds=(1, 8)), Param('x', float, 0.0, 'low end only', bounds=(0, None)),
              Param('y', float, -1.0, 'high end only', bounds=(None, 0.5)))

    def forward(self, x):
        return x


@pytest.mark.parametrize('kw, message', [
    (dict(n=0), "degradation 'bounded': n=0 must be in [1, 8]"),
    (dict(n='9'), "degradation 'bounded': n=9 must be in [1, 8]"),     # spec text, converted then checked
    (dict(x=-1e-9), "degradation 'bounded': x=-1e-09 must be >= 0"),
    (dict(y=0.6), "degradation 'bounded': y=0.6 must be <= 0.5"),
])
def test_bounds_are_checked_with_both_ends_included(kw, message):
    with pytest.raises(SpecError) as e:
        Bounded(**kw)
    assert str(e.value) == message
    ok = Bounded(n=1, x=0, y=0.5).config
    assert ok == {'n': 1, 'x': 0.0, 'y': 0.5} and Bounded(n='8').n == 8


def test_bounds_are_declared_sensibly_and_listed():
    with pytest.raises(SpecError, match=r"Param 'n': default 0 is outside \[1, 8\]"):
        Param('n', int, 0, 'x', bounds=(1, 8))
    with pytest.raises(SpecError, match='only for an int or a float'):
        Param('s', str, 'a', 'x', bounds=(0, 1))
    assert Bounded.params[0].describe() == 'n (int, default 2, in [1, 8])'
    assert Bounded.params[1].describe() == 'x (float, default 0.0, >= 0)'

    @hookimpl
    def ganinv_degradations():
        return [Bounded]
    listing = Registry({'b': type('P', (), {'ganinv_degradations': staticmethod(ganinv_degradations)})()},
                       entry_points=False).format_plugin_list()
    assert "      n=2  (int, [1, 8])  both ends" in listing and "      y=-1.0  (float, <= 0.5)  high end only" in listing
