"""ganinv-plugin-example: the hook functions ganinv finds through the ``ganinv`` entry point."""
from ganinv_core.hooks import hookimpl

from .colour_response import ColourResponse
from .colour_stats import ColourStats

__all__ = ['ColourResponse', 'ColourStats']


@hookimpl
def ganinv_degradations():
    """The degradation classes this plugin contributes."""
    return [ColourResponse]


@hookimpl
def ganinv_losses():
    """The loss classes this plugin contributes."""
    return [ColourStats]
