"""Every degradation and loss the registry knows (installed plugins included) passes the conformance checks."""
import pytest

from ganinv_core.hooks import get_registry
from ganinv_core.hooks.testing import check_degradation, check_loss

_REG = get_registry()


@pytest.mark.parametrize('name', sorted(_REG.degradations))
def test_degradation_conforms(name):
    check_degradation(_REG.degradations[name])


@pytest.mark.parametrize('name', sorted(_REG.losses))
def test_loss_conforms(name):
    check_loss(_REG.losses[name])


def test_builtins_are_registered():
    assert {'grayscale', 'inpaint', 'blur', 'downsample', 'jpeg', 'noise'} <= set(_REG.degradations)
    assert {'vgg16', 'mse', 'l1', 'ssim', 'identity', 'latent-dist', 'init-dist', 'w-cosine', 'noise-reg'} <= \
        set(_REG.losses)
    assert not _REG.broken


def test_builtins_that_run_in_the_step_are_cuda_graph_safe():
    """Every built-in stage and loss that runs inside the optimisation step is marked (and so checked by the
    conformance suite); noise, applied to the simulated target only, is not (it draws host-side noise)."""
    marked = {n for n, c in {**_REG.degradations, **_REG.losses}.items() if c.cuda_graph_safe}
    assert {'grayscale', 'inpaint', 'blur', 'downsample', 'jpeg', 'vgg16', 'mse', 'l1', 'ssim', 'latent-dist',
            'init-dist', 'noise-reg', 'w-cosine', 'identity'} <= marked
    assert 'noise' not in marked and _REG.degradations['noise'].simulate_only


def test_affine_marks_are_true_and_checked():
    """Blur, area downsampling, grayscale and holes are affine (their composite is the consistent restoration);
    JPEG, bicubic resizing (clamped) and noise are not; a class wrongly marked fails the conformance check."""
    from ganinv_core.hooks import Degradation
    reg = _REG.degradations
    assert all(reg[n].affine for n in ('blur', 'grayscale', 'inpaint')) and reg['downsample']().affine
    assert not (reg['jpeg'].affine or reg['noise'].affine or reg['downsample'](method='bicubic').affine)

    class Gamma(Degradation):
        name, affine = 'gamma', True

        def forward(self, x):
            return ((x + 1) / 2) ** 2.2 * 2 - 1
    with pytest.raises(AssertionError, match="gamma: marked affine, but is not"):
        check_degradation(Gamma)
